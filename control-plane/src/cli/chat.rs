//! `veza chat ROOM_ID`: prints the room live and sends each line typed on standard input.

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use veza_proto::chat::{ChatMessage, GetMessagesRequest, chat_service_client::ChatServiceClient};

use super::client::ClientArgs;

/// Messages of history shown on entering the room.
const HISTORY: i32 = 20;

/// Runs the chat client until standard input closes or the server ends the stream.
pub async fn run(room_id: i64, client: ClientArgs) -> anyhow::Result<()> {
    let session = client.connect().await?;
    let mut chat = ChatServiceClient::new(session.channel.clone());
    let page = chat
        .get_messages(session.request(GetMessagesRequest {
            room_id,
            limit: HISTORY,
            ..Default::default()
        })?)
        .await?
        .into_inner();
    for m in page.messages.iter().rev() {
        print_message(m);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<ChatMessage>(16);
    let mut incoming = chat
        .chat_stream(session.request(tokio_stream::wrappers::ReceiverStream::new(rx))?)
        .await?
        .into_inner();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(text) if !text.trim().is_empty() => {
                    tx.send(ChatMessage { room_id, content: text, ..Default::default() }).await?;
                }
                Some(_) => {}
                None => stdin_open = false,
            },
            m = incoming.next() => match m {
                Some(Ok(m)) if m.room_id == room_id => print_message(&m),
                Some(Ok(_)) => {}
                Some(Err(status)) => anyhow::bail!("{}: {}", status.code(), status.message()),
                None => return Ok(()),
            },
        }
        if !stdin_open && tx.capacity() == tx.max_capacity() {
            // Everything typed was sent; wait briefly for its echo, then leave.
            let grace = tokio::time::sleep(std::time::Duration::from_millis(500));
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    _ = &mut grace => return Ok(()),
                    m = incoming.next() => match m {
                        Some(Ok(m)) if m.room_id == room_id => print_message(&m),
                        Some(Ok(_)) => {}
                        _ => return Ok(()),
                    },
                }
            }
        }
    }
}

fn print_message(m: &ChatMessage) {
    println!(
        "[{}] #{} user {}: {}",
        m.room_id, m.message_id, m.user_id, m.content
    );
}
