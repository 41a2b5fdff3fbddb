//! Input checks shared by the services: each names the field it refuses. No stored string
//! holds a NUL or another control character (SPEC §13); message bodies may hold newlines and
//! tabs.

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
    if !valid || e.chars().any(char::is_control) {
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

/// A free-text field of at most `max` characters, without control characters.
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String> {
    checked_text(field, value, max, false)
}

/// A message body of at most `max` characters: control characters other than newline and tab
/// are refused.
pub fn body(field: &'static str, value: &str, max: usize) -> Result<String> {
    checked_text(field, value, max, true)
}

fn checked_text(field: &'static str, value: &str, max: usize, lines: bool) -> Result<String> {
    if value.len() > max * 4 || value.chars().count() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if lines {
        body_chars(field, value)?;
    } else {
        no_control(field, value)?;
    }
    Ok(value.trim().to_string())
}

/// Refuses `value` when it holds a NUL or another control character.
pub fn no_control(field: &'static str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain NUL or other control characters",
        ));
    }
    Ok(())
}

/// Refuses `value` when it holds a control character other than newline and tab.
pub fn body_chars(field: &'static str, value: &str) -> Result<()> {
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DomainError::invalid(
            field,
            "must not contain NUL or control characters other than newline and tab",
        ));
    }
    Ok(())
}

/// A list of ids (`noun` ids: "user", "notification"): at most `max` of them, each positive;
/// returned without repeats, in order of first appearance. Whether it may be empty is the
/// caller's rule.
pub fn ids(field: &'static str, ids: &[i64], max: usize, noun: &str) -> Result<Vec<i64>> {
    if ids.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("at most {max} {noun} ids"),
        ));
    }
    if let Some(bad) = ids.iter().find(|i| **i <= 0) {
        return Err(DomainError::invalid(
            field,
            format!("{bad} is not a {noun} id"),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    Ok(ids.iter().copied().filter(|i| seen.insert(*i)).collect())
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

    #[test]
    fn control_characters_are_refused() {
        for bad in ["a\0b", "a\u{7}", "a\u{1b}[31m", "a\r", "a\u{85}"] {
            assert!(matches!(
                text("name", bad, 100),
                Err(DomainError::InvalidArgument { field: "name", .. })
            ));
            assert!(body("content", bad, 100).is_err(), "{bad:?}");
        }
        assert!(text("name", "a\nb", 100).is_err());
        assert_eq!(body("content", "a\n\tb", 100).unwrap(), "a\n\tb");
        assert!(email("a\0@b.io").is_err());
        assert!(no_control("k", "ok é ü 🎵").is_ok());
    }
}
