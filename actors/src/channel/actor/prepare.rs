//! Preparing a claimed message for the agent, once: saving its media or attachments and
//! quoting the message it answers or reacts to, then storing the final text in its inbox
//! record (synced), so that a hand-over after a crash carries the very same text (the turn
//! journal refuses a key whose text changed).
//!
//! Owns: the attachment lines (`[attachment image/jpeg, 5120 bytes: /…/media/whatsapp/….jpg]`,
//! `[attachment unavailable: …]`) and the quote lines (`[in reply to: "…"]`,
//! `[reacted to: "…"]`), which quote only a message of the same session: one the user sent
//! (the inbox) or one of our replies (the outbox, by the id the provider gave it).
//! Must not: fetch for a message that was not admitted (only claimed records come here), or
//! block the hand-over past the media deadline (the fetcher bounds every fetch).

use crate::channel::content::Content;
use crate::channel::inbox::{Inbox, InboxRecord};
use crate::channel::media::{MediaError, MediaFetcher, SavedMedia};
use crate::channel::outbox::Outbox;
use crate::channel::whatsapp::truncate_bytes;
use crate::channel::MAX_TEXT_BYTES;

/// Longest quote of an earlier message, in characters.
const QUOTE_CHARS: usize = 280;

/// What a preparation needs from the channel.
pub(super) struct Preparer {
    /// The channel's inbox (quotes, the prepared record).
    pub(super) inbox: Inbox,
    /// The outbox (quotes of our own replies, by the id the provider gave them).
    pub(super) outbox: Outbox,
    /// Saves media and attachments.
    pub(super) media: Option<MediaFetcher>,
    /// The origin bridge attachment URLs must be on.
    pub(super) attachment_origin: Option<String>,
}

/// Whether a record has anything to prepare.
fn needs_preparation(record: &InboxRecord) -> bool {
    let message = &record.message;
    !record.prepared
        && (message.reply_to.is_some()
            || !message.attachments.is_empty()
            || message
                .content
                .as_ref()
                .is_some_and(|c| c.media().is_some() || c.reacted_to().is_some()))
}

fn attachment_line(result: &Result<SavedMedia, MediaError>) -> String {
    match result {
        Ok(saved) => format!(
            "[attachment {}, {} bytes: {}]",
            saved.mime_type,
            saved.bytes,
            saved.path.display()
        ),
        Err(error) => format!("[attachment unavailable: {error}]"),
    }
}

impl Preparer {
    /// A saved file belongs to the record's session (no session: nobody external reads it).
    fn note_owner(&self, record: &InboxRecord, result: &Result<SavedMedia, MediaError>) {
        if let (Some(fetcher), Ok(saved), Some(session)) =
            (&self.media, result, record.session_key.as_deref())
        {
            fetcher.record_owner(&saved.path, session);
        }
    }

    /// The prepared text of `record`, stored in it (synced); `None` when it needs nothing (or
    /// was prepared before: its stored text is final). An error when the prepared text could
    /// not be made durable: the message must not be handed on then (a later hand-over could
    /// carry another text, which its turn journal would refuse).
    pub(super) async fn prepare(&self, record: &InboxRecord) -> Result<Option<String>, String> {
        if !needs_preparation(record) {
            return Ok(None);
        }
        let channel = &record.channel;
        let mut message = record.message.clone();
        let mut text = message.text.clone().unwrap_or_default();
        if let Some(id) = message.reply_to.as_deref() {
            text.push('\n');
            text.push_str(&match self.quote(record, id) {
                Some(quote) => format!("[in reply to: \"{quote}\"]"),
                None => "[in reply to an earlier message]".to_string(),
            });
        }
        if let Some(id) = message.content.as_ref().and_then(Content::reacted_to) {
            if let Some(quote) = self.quote(record, id) {
                text.push_str(&format!("\n[reacted to: \"{quote}\"]"));
            }
        }
        if let Some((_, media)) = message.content.as_ref().and_then(Content::media) {
            let result = match &self.media {
                Some(fetcher) => {
                    fetcher
                        .fetch_whatsapp(channel, &message.message_id, media)
                        .await
                }
                None => Err(MediaError::NotConfigured),
            };
            if let Err(error) = &result {
                tracing::warn!(%channel, %error, "media not saved");
            }
            self.note_owner(record, &result);
            text.push('\n');
            text.push_str(&attachment_line(&result));
        }
        for (index, attachment) in message.attachments.iter_mut().enumerate() {
            let result = match &self.media {
                Some(fetcher) => {
                    fetcher
                        .save_attachment(
                            channel,
                            &message.message_id,
                            index,
                            attachment,
                            self.attachment_origin.as_deref(),
                        )
                        .await
                }
                None => Err(MediaError::NotConfigured),
            };
            if let Err(error) = &result {
                tracing::warn!(%channel, %error, "attachment not saved");
            }
            self.note_owner(record, &result);
            // The bytes live in the file now (or nowhere): never in the store.
            attachment.data = None;
            let name = attachment.name.as_deref().unwrap_or("attachment");
            text.push_str(&format!("\n{name}: {}", attachment_line(&result)));
        }
        let text = truncate_bytes(text, MAX_TEXT_BYTES + 4096);
        message.text = Some(text.clone());
        self.inbox
            .set_prepared(channel, record.seq, &message)
            .map_err(|e| e.to_string())?;
        self.inbox.sync().await.map_err(|e| e.to_string())?;
        Ok(Some(text))
    }

    /// The text of message `id` when it is stored and belongs to the same session.
    fn quote(&self, record: &InboxRecord, id: &str) -> Option<String> {
        let (session, text) = match self.inbox.find(&record.channel, id).ok().flatten() {
            Some(earlier) => (earlier.session_key, earlier.message.text?),
            None => {
                let ours = self.outbox.sent_as(&record.channel, id).ok()??;
                (ours.message.session, ours.message.text)
            }
        };
        if session.is_none() || session != record.session_key {
            return None;
        }
        let first = text.lines().next().unwrap_or_default();
        let mut quote: String = first.chars().take(QUOTE_CHARS).collect();
        if quote.chars().count() < text.chars().count() {
            quote.push('…');
        }
        Some(quote.replace('"', "'"))
    }
}
