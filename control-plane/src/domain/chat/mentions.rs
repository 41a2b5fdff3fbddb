//! `@username` mentions: a `mention` notification for each mentioned member of the room.

use std::collections::HashMap;

use veza_storage::{Db, MessageRecord};

use crate::domain::Notifier;

/// Most distinct mentions honoured in one message.
const MAX_MENTIONS: usize = 20;

/// The distinct usernames mentioned in `content`.
pub fn mentioned(content: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, _) in content.match_indices('@') {
        let before = content[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric()) {
            continue; // an email address, not a mention
        }
        let name: String = content[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
            .collect();
        let name = name.trim_end_matches(['.', '-']).to_string();
        if name.len() >= 3 && !names.contains(&name) && names.len() < MAX_MENTIONS {
            names.push(name);
        }
    }
    names
}

/// Notifies the members mentioned in `m`, off the sender's path.
pub fn notify(db: &Db, notifier: &Notifier, m: &MessageRecord) {
    let names = mentioned(&m.content);
    if names.is_empty() {
        return;
    }
    let (db, notifier, m) = (db.clone(), notifier.clone(), m.clone());
    tokio::spawn(async move {
        let ids = match db.members_named(m.room_id, &names).await {
            Ok(ids) => ids
                .into_iter()
                .filter(|id| *id != m.user_id)
                .collect::<Vec<_>>(),
            Err(e) => return tracing::error!(error = %e, "looking up mentions"),
        };
        if ids.is_empty() {
            return;
        }
        let data = HashMap::from([
            ("room_id".to_string(), m.room_id.to_string()),
            ("message_id".to_string(), m.id.to_string()),
            ("from_user_id".to_string(), m.user_id.to_string()),
        ]);
        let body: String = m.content.chars().take(200).collect();
        if let Err(e) = notifier
            .create(&ids, "mention", "You were mentioned", &body, data)
            .await
        {
            tracing::error!(error = %e, "creating mention notifications");
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_mentions_not_emails() {
        assert_eq!(
            super::mentioned("hi @demo and @bob_1, mail me@x.io @demo."),
            vec!["demo", "bob_1"]
        );
        assert!(super::mentioned("@ab is too short").is_empty());
    }
}
