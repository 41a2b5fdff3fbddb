//! Input checks shared by the services: each names the field it refuses.

use super::error::{DomainError, Result};

/// Longest email accepted (RFC 5321).
const EMAIL_MAX: usize = 254;

/// A normalised (trimmed, lower-case) email address.
pub fn email(raw: &str) -> Result<String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        return Err(DomainError::invalid("email", "must not be empty"));
    }
    if e.len() > EMAIL_MAX {
        return Err(DomainError::invalid(
            "email",
            format!("longer than {EMAIL_MAX} bytes"),
        ));
    }
    let valid = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !e.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        return Err(DomainError::invalid("email", "not an email address"));
    }
    Ok(e)
}

/// A new password: 8 to 128 characters.
pub fn password(p: &str) -> Result<()> {
    let n = p.chars().count();
    if n < 8 {
        return Err(DomainError::invalid(
            "password",
            "must be at least 8 characters",
        ));
    }
    if p.len() > 1024 || n > 128 {
        return Err(DomainError::invalid(
            "password",
            "must be at most 128 characters",
        ));
    }
    Ok(())
}

/// A username: 3 to 32 of `[A-Za-z0-9_.-]`.
pub fn username(u: &str) -> Result<String> {
    let u = u.trim();
    if !(3..=32).contains(&u.len()) {
        return Err(DomainError::invalid(
            "username",
            "must be 3 to 32 characters",
        ));
    }
    if !u
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(DomainError::invalid(
            "username",
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(u.to_string())
}

/// A free-text field of at most `max` characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String> {
    if value.len() > max * 4 || value.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(value.trim().to_string())
}

/// A username derived from an email's local part when none was given.
pub fn username_from_email(email: &str) -> String {
    let local: String = email
        .split('@')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
        .take(24)
        .collect();
    if local.len() >= 3 {
        local
    } else {
        format!("user-{local}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field() {
        assert_eq!(email(" A@B.io ").unwrap(), "a@b.io");
        assert!(matches!(
            email(""),
            Err(DomainError::InvalidArgument { field: "email", .. })
        ));
        assert!(email("nope").is_err());
        assert!(email(&"x".repeat(300)).is_err());
        assert!(password("short").is_err());
        assert!(password(&"x".repeat(1_000_000)).is_err());
        assert!(password("long enough").is_ok());
        assert!(username("a b").is_err());
        assert_eq!(username_from_email("jo@x.y"), "user-jo");
    }
}
