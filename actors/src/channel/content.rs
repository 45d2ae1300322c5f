//! What an inbound message carries, as one closed type ([`Content`]), parsed from the Cloud
//! API's per-type objects, and the text rendering the agent sees for it.
//!
//! Owns: the mapping from a webhook message's `type` and its type object (`image`, `location`,
//! `interactive`, …) to [`Content`], and [`Content::render`], which states the type in front
//! (`[button reply] Yes please`, `[image] look at this`, `[location] Berlin (52.52, 13.40)`).
//! Must not: fail on a shape it does not know (an unknown type is [`Content::Unknown`] with its
//! raw type name; a known type with missing fields keeps what it has), fetch anything (media
//! are fetched by [`super::media`], and only by their Graph media id, never from a URL of a
//! message body), or decide what reaches the model (the channel bridge does, from
//! [`Content::handling`]).

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// Longest rendering of one field (a caption, a title, a name), in characters.
const MAX_FIELD_CHARS: usize = 4096;

/// A media message's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// `image`.
    Image,
    /// `video`.
    Video,
    /// `audio` (voice notes included).
    Audio,
    /// `document`.
    Document,
    /// `sticker`.
    Sticker,
}

impl MediaKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    fn from_wire(kind: &str) -> Option<Self> {
        Some(match kind {
            "image" => MediaKind::Image,
            "video" => MediaKind::Video,
            "audio" => MediaKind::Audio,
            "document" => MediaKind::Document,
            "sticker" => MediaKind::Sticker,
            _ => return None,
        })
    }
}

/// The reference to a media object a webhook carries (never its bytes, never a URL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// The Graph media id (`GET {graph_base}/{version}/{id}` answers the download URL).
    pub id: Option<String>,
    /// The MIME type the webhook declared.
    pub mime_type: Option<String>,
    /// The file's SHA-256 as the webhook gave it (base64 or hex).
    pub sha256: Option<String>,
    /// The caption (image, video, document).
    pub caption: Option<String>,
    /// The file name the sender gave (document; display only, never a path).
    pub filename: Option<String>,
}

/// One shared contact card.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedContact {
    /// `name.formatted_name`.
    pub name: Option<String>,
    /// `phones[].phone`.
    pub phones: Vec<String>,
}

/// One item of an order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// `product_retailer_id`.
    pub product: Option<String>,
    /// `quantity`.
    pub quantity: Option<Number>,
    /// `item_price`.
    pub price: Option<Number>,
    /// `currency`.
    pub currency: Option<String>,
}

/// A reply to an interactive message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Interactive {
    /// A reply button was tapped.
    ButtonReply {
        /// The button's id.
        id: Option<String>,
        /// Its label.
        title: Option<String>,
    },
    /// A list row was chosen.
    ListReply {
        /// The row's id.
        id: Option<String>,
        /// Its title.
        title: Option<String>,
        /// Its description.
        description: Option<String>,
    },
    /// A WhatsApp Flow was completed.
    NfmReply {
        /// The flow's name.
        name: Option<String>,
        /// The summary text.
        body: Option<String>,
        /// The form's answers (JSON as a string).
        response_json: Option<String>,
    },
    /// Another interactive reply type, by name.
    Other {
        /// The raw `interactive.type`.
        kind: String,
    },
}

/// What one inbound message carries: a closed type with room for the unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The body.
        body: String,
    },
    /// An image, video, audio, document or sticker.
    Media {
        /// Which.
        kind: MediaKind,
        /// The media reference.
        media: MediaRef,
    },
    /// A shared location.
    Location {
        /// Degrees.
        latitude: Option<Number>,
        /// Degrees.
        longitude: Option<Number>,
        /// The place's name.
        name: Option<String>,
        /// Its address.
        address: Option<String>,
    },
    /// Shared contact cards.
    Contacts {
        /// The cards.
        contacts: Vec<SharedContact>,
    },
    /// A reply to an interactive message (buttons, lists, flows).
    Interactive {
        /// The reply.
        reply: Interactive,
    },
    /// A template's quick-reply button.
    Button {
        /// The button's text.
        text: Option<String>,
        /// The payload the template defined.
        payload: Option<String>,
    },
    /// A reaction to an earlier message (an empty emoji removes it).
    Reaction {
        /// The message reacted to.
        message_id: Option<String>,
        /// The emoji, `None` when the reaction was removed.
        emoji: Option<String>,
    },
    /// An order from a catalog.
    Order {
        /// The catalog.
        catalog_id: Option<String>,
        /// The sender's note.
        text: Option<String>,
        /// The items.
        items: Vec<OrderItem>,
    },
    /// A system event (e.g. `user_changed_number`).
    System {
        /// The event type.
        kind: Option<String>,
        /// Meta's description.
        body: Option<String>,
        /// The new WhatsApp id, for a number change.
        new_wa_id: Option<String>,
    },
    /// A message type the Cloud API does not support (error 131051 and the like).
    Unsupported {
        /// The first error's code.
        code: Option<i64>,
        /// Its title.
        title: Option<String>,
    },
    /// A type this version does not know, by its raw name.
    Unknown {
        /// The raw `type`.
        kind: String,
    },
}

/// What the channel does with a message of some content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// A turn of the agent answers it.
    Turn,
    /// It is noted in the session and on the timeline, without a model call (reactions and
    /// system events, unless `react_to_reactions`).
    Note,
    /// It gets the channel's `unsupported_reply`, once, and nothing else.
    Unsupported,
}

fn text_of(value: Option<&Value>) -> Option<String> {
    let s = value?.as_str()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.chars().take(MAX_FIELD_CHARS).collect())
}

fn number_of(value: Option<&Value>) -> Option<Number> {
    match value? {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => s.trim().parse::<f64>().ok().and_then(Number::from_f64),
        _ => None,
    }
}

impl Content {
    /// The content of a webhook message of type `kind`, whose fields are `message` (the whole
    /// message object). Never fails: unknown types become [`Content::Unknown`].
    pub fn from_wire(kind: &str, message: &Value) -> Content {
        let object = message.get(kind);
        let field = |name: &str| text_of(object.and_then(|o| o.get(name)));
        if let Some(media_kind) = MediaKind::from_wire(kind) {
            return Content::Media {
                kind: media_kind,
                media: MediaRef {
                    id: field("id").filter(|id| super::is_clean_id(id)),
                    mime_type: field("mime_type"),
                    sha256: field("sha256"),
                    caption: field("caption"),
                    filename: field("filename"),
                },
            };
        }
        match kind {
            "text" => Content::Text {
                body: object
                    .and_then(|o| o.get("body"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            },
            "location" => Content::Location {
                latitude: number_of(object.and_then(|o| o.get("latitude"))),
                longitude: number_of(object.and_then(|o| o.get("longitude"))),
                name: field("name"),
                address: field("address"),
            },
            "contacts" => Content::Contacts {
                contacts: message
                    .get("contacts")
                    .and_then(Value::as_array)
                    .map(|cards| cards.iter().take(32).map(contact_of).collect())
                    .unwrap_or_default(),
            },
            "interactive" => Content::Interactive {
                reply: interactive_of(object),
            },
            "button" => Content::Button {
                text: field("text"),
                payload: field("payload"),
            },
            "reaction" => Content::Reaction {
                message_id: field("message_id"),
                emoji: field("emoji"),
            },
            "order" => Content::Order {
                catalog_id: field("catalog_id"),
                text: field("text"),
                items: object
                    .and_then(|o| o.get("product_items"))
                    .and_then(Value::as_array)
                    .map(|items| items.iter().take(64).map(item_of).collect())
                    .unwrap_or_default(),
            },
            "system" => Content::System {
                kind: field("type"),
                body: field("body"),
                new_wa_id: field("new_wa_id").or_else(|| field("wa_id")),
            },
            "unsupported" => {
                let first = message
                    .get("errors")
                    .and_then(Value::as_array)
                    .and_then(|e| e.first())
                    .or_else(|| {
                        object
                            .and_then(|o| o.get("errors"))
                            .and_then(Value::as_array)
                            .and_then(|e| e.first())
                    });
                Content::Unsupported {
                    code: first.and_then(|e| e.get("code")).and_then(Value::as_i64),
                    title: text_of(first.and_then(|e| e.get("title"))),
                }
            }
            other => Content::Unknown {
                kind: other.chars().filter(|c| !c.is_control()).take(64).collect(),
            },
        }
    }

    /// What the channel does with it; reactions and system events are only noted unless
    /// `react_to_reactions`.
    pub fn handling(&self, react_to_reactions: bool) -> Handling {
        match self {
            Content::Reaction { .. } | Content::System { .. } if !react_to_reactions => {
                Handling::Note
            }
            Content::Unsupported { .. } | Content::Unknown { .. } => Handling::Unsupported,
            _ => Handling::Turn,
        }
    }

    /// The media this content refers to, if any.
    pub fn media(&self) -> Option<(MediaKind, &MediaRef)> {
        match self {
            Content::Media { kind, media } => Some((*kind, media)),
            _ => None,
        }
    }

    /// The message id a reaction refers to.
    pub fn reacted_to(&self) -> Option<&str> {
        match self {
            Content::Reaction { message_id, .. } => message_id.as_deref(),
            _ => None,
        }
    }

    /// The text the agent sees: plain text as it is, everything else with its type in front.
    pub fn render(&self) -> String {
        match self {
            Content::Text { body } => body.clone(),
            Content::Media { kind, media } => {
                let mut out = format!("[{}]", kind.as_str());
                if let Some(name) = &media.filename {
                    out.push_str(&format!(" {name}"));
                }
                if let Some(caption) = &media.caption {
                    out.push_str(&format!(" {caption}"));
                }
                out
            }
            Content::Location {
                latitude,
                longitude,
                name,
                address,
            } => {
                let place: Vec<&str> = [name, address]
                    .iter()
                    .filter_map(|p| p.as_deref())
                    .collect();
                let mut out = "[location]".to_string();
                if !place.is_empty() {
                    out.push_str(&format!(" {}", place.join(", ")));
                }
                if let (Some(lat), Some(lon)) = (
                    latitude.as_ref().and_then(Number::as_f64),
                    longitude.as_ref().and_then(Number::as_f64),
                ) {
                    out.push_str(&format!(" ({lat:.2}, {lon:.2})"));
                }
                out
            }
            Content::Contacts { contacts } => {
                let cards: Vec<String> = contacts
                    .iter()
                    .map(|c| {
                        let name = c.name.as_deref().unwrap_or("unnamed");
                        if c.phones.is_empty() {
                            name.to_string()
                        } else {
                            format!("{name} ({})", c.phones.join(", "))
                        }
                    })
                    .collect();
                format!("[contacts] {}", cards.join("; "))
                    .trim_end()
                    .to_string()
            }
            Content::Interactive { reply } => match reply {
                Interactive::ButtonReply { id, title } => {
                    format!("[button reply] {}", or_id(title, id))
                }
                Interactive::ListReply {
                    id,
                    title,
                    description,
                } => match description {
                    Some(d) => format!("[list reply] {} ({d})", or_id(title, id)),
                    None => format!("[list reply] {}", or_id(title, id)),
                },
                Interactive::NfmReply {
                    name,
                    body,
                    response_json,
                } => {
                    let mut out = "[form reply]".to_string();
                    for part in [name, body, response_json].into_iter().flatten() {
                        out.push_str(&format!(" {part}"));
                    }
                    out
                }
                Interactive::Other { kind } => format!("[interactive reply: {kind}]"),
            },
            Content::Button { text, payload } => format!("[quick reply] {}", or_id(text, payload)),
            Content::Reaction { emoji, .. } => match emoji {
                Some(emoji) => format!("[reaction {emoji} to an earlier message]"),
                None => "[reaction removed from an earlier message]".to_string(),
            },
            Content::Order {
                catalog_id,
                text,
                items,
            } => {
                let lines: Vec<String> = items
                    .iter()
                    .map(|i| {
                        let mut line = format!(
                            "{} x{}",
                            i.product.as_deref().unwrap_or("?"),
                            i.quantity.as_ref().map_or("?".into(), Number::to_string)
                        );
                        if let Some(price) = &i.price {
                            line.push_str(&format!(
                                " at {price} {}",
                                i.currency.as_deref().unwrap_or("")
                            ));
                        }
                        line.trim_end().to_string()
                    })
                    .collect();
                let mut out = format!("[order] {} item(s)", items.len());
                if let Some(catalog) = catalog_id {
                    out.push_str(&format!(" from catalog {catalog}"));
                }
                if !lines.is_empty() {
                    out.push_str(&format!(": {}", lines.join(", ")));
                }
                if let Some(text) = text {
                    out.push_str(&format!(". {text}"));
                }
                out
            }
            Content::System {
                kind,
                body,
                new_wa_id,
            } => {
                let mut out = format!("[system {}]", kind.as_deref().unwrap_or("event"));
                if let Some(body) = body {
                    out.push_str(&format!(" {body}"));
                } else if let Some(id) = new_wa_id {
                    out.push_str(&format!(" new number {id}"));
                }
                out
            }
            Content::Unsupported { code, .. } => match code {
                Some(code) => format!("[unsupported message, error {code}]"),
                None => "[unsupported message]".to_string(),
            },
            Content::Unknown { kind } => format!("[unknown message type {kind}]"),
        }
    }
}

fn or_id(title: &Option<String>, id: &Option<String>) -> String {
    title
        .clone()
        .or_else(|| id.clone())
        .unwrap_or_else(|| "(empty)".into())
}

fn contact_of(card: &Value) -> SharedContact {
    SharedContact {
        name: text_of(card.get("name").and_then(|n| n.get("formatted_name")))
            .or_else(|| text_of(card.get("name").and_then(|n| n.get("first_name")))),
        phones: card
            .get("phones")
            .and_then(Value::as_array)
            .map(|phones| {
                phones
                    .iter()
                    .take(8)
                    .filter_map(|p| text_of(p.get("phone")).or_else(|| text_of(p.get("wa_id"))))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn item_of(item: &Value) -> OrderItem {
    OrderItem {
        product: text_of(item.get("product_retailer_id")),
        quantity: number_of(item.get("quantity")),
        price: number_of(item.get("item_price")),
        currency: text_of(item.get("currency")),
    }
}

fn interactive_of(object: Option<&Value>) -> Interactive {
    let kind = object
        .and_then(|o| o.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let inner = object.and_then(|o| o.get(kind));
    let field = |name: &str| text_of(inner.and_then(|o| o.get(name)));
    match kind {
        "button_reply" => Interactive::ButtonReply {
            id: field("id"),
            title: field("title"),
        },
        "list_reply" => Interactive::ListReply {
            id: field("id"),
            title: field("title"),
            description: field("description"),
        },
        "nfm_reply" => Interactive::NfmReply {
            name: field("name"),
            body: field("body"),
            response_json: field("response_json"),
        },
        other => Interactive::Other {
            kind: other.chars().filter(|c| !c.is_control()).take(64).collect(),
        },
    }
}

/// An attachment a bridge sent along with a message (`attachments[]` of the bridge protocol).
/// Either `url` (on the bridge's own host, fetched only once the sender is admitted) or inline
/// `data` (base64, under the bridge's size cap) carries the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name the bridge gave (display only, never a path).
    #[serde(default, alias = "filename")]
    pub name: Option<String>,
    /// The MIME type the bridge declared.
    #[serde(default, alias = "mime", alias = "content_type")]
    pub mime_type: Option<String>,
    /// The size the bridge declared, in bytes.
    #[serde(default, alias = "size_bytes")]
    pub size: Option<u64>,
    /// Where the bridge serves it (same host as its `outbound_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The bytes, base64, when sent inline (removed from the stored message once saved).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "base64",
        alias = "content_base64"
    )]
    pub data: Option<String>,
}

#[cfg(test)]
mod tests;
