//! Signed one-click unsubscribe links (RFC 8058) for newsletter and marketing mail.
//!
//! This module owns the token format the TicketMax frontend verifies with the same secret
//! (`TICKETMAX_UNSUBSCRIBE_SECRET`):
//!
//! ```text
//! v1.<user id>.<list>.<signature>
//! list      = "newsletter" | "marketing"
//! signature = base64url without padding of HMAC-SHA256(key = the secret's UTF-8 bytes,
//!                                                      message = "v1.<user id>.<list>")
//! ```
//!
//! e.g. `v1.11.newsletter.3q2-7w...` (43 signature characters). The link is
//! `<FRONTEND_URL>/unsubscribe?token=<token>`; RFC 8058 clients POST
//! `List-Unsubscribe=One-Click` to it. With `TICKETMAX_UNSUBSCRIBE_MAILTO` set, the
//! `List-Unsubscribe` header also offers `mailto:<address>?subject=<token>`. The token names one
//! user and one list and nothing else, so it can neither be forged for another user nor
//! unsubscribe them from another list; it does not expire (an unsubscribe link must keep working
//! long after the e-mail was sent); rotating the secret invalidates every link sent before.
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// Shortest secret accepted: 32 bytes, as long as an HMAC-SHA256 tag, so that guessing the
/// secret is no easier than forging a tag.
pub const MIN_SECRET_LEN: usize = 32;

/// The two things a user can unsubscribe from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum List {
    /// The weekly newsletter (`users.newsletter_subscribed`).
    Newsletter,
    /// Birthday offers, win-back offers and promotions (`users.promotional_emails`).
    Marketing,
}

impl List {
    pub fn as_str(self) -> &'static str {
        match self {
            List::Newsletter => "newsletter",
            List::Marketing => "marketing",
        }
    }

    pub fn parse(s: &str) -> Option<List> {
        match s {
            "newsletter" => Some(List::Newsletter),
            "marketing" => Some(List::Marketing),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    #[error(
        "TICKETMAX_UNSUBSCRIBE_SECRET is too short ({0} bytes): use at least {MIN_SECRET_LEN} \
         random bytes, e.g. `openssl rand -base64 48`"
    )]
    ShortSecret(usize),
    #[error("TICKETMAX_UNSUBSCRIBE_MAILTO '{0}' is not an e-mail address: {1}")]
    Mailto(String, String),
}

/// Signs and checks unsubscribe tokens and builds the links and headers that carry them.
#[derive(Clone)]
pub struct Unsubscribe {
    key: hmac::Key,
    /// `<FRONTEND_URL>/unsubscribe`.
    base_url: String,
    mailto: Option<String>,
}

impl std::fmt::Debug for Unsubscribe {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsubscribe")
            .field("base_url", &self.base_url)
            .field("mailto", &self.mailto)
            .finish_non_exhaustive()
    }
}

/// What one e-mail carries: the link for its body and the two RFC 8058 header values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Links {
    pub url: String,
    /// `List-Unsubscribe`: `<https://...>` and, when configured, `<mailto:...>`.
    pub list_unsubscribe: String,
    /// `List-Unsubscribe-Post`.
    pub list_unsubscribe_post: &'static str,
}

impl Unsubscribe {
    /// `secret` as configured (at least [`MIN_SECRET_LEN`] bytes); `mailto` an address or none.
    pub fn new(
        secret: &str,
        frontend_url: &str,
        mailto: Option<&str>,
    ) -> Result<Self, UnsubscribeError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(UnsubscribeError::ShortSecret(secret.len()));
        }
        let mailto = match mailto.map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => {
                // A parsed address holds no CR/LF, spaces or '<>' that could break the header.
                let address: lettre::Address =
                    m.parse().map_err(|e: lettre::address::AddressError| {
                        UnsubscribeError::Mailto(m.to_owned(), e.to_string())
                    })?;
                Some(address.to_string())
            }
            None => None,
        };
        Ok(Unsubscribe {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            base_url: format!("{}/unsubscribe", frontend_url.trim_end_matches('/')),
            mailto,
        })
    }

    pub fn token(&self, user_id: i64, list: List) -> String {
        let message = format!("v1.{user_id}.{}", list.as_str());
        let tag = hmac::sign(&self.key, message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The user and list of a token this secret signed (constant-time check), else None.
    pub fn verify(&self, token: &str) -> Option<(i64, List)> {
        let (message, signature) = token.rsplit_once('.')?;
        let mut parts = message.split('.');
        let (Some("v1"), Some(user), Some(list), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let user: i64 = user.parse().ok()?;
        let list = List::parse(list)?;
        // Only the canonical spelling of the id was signed ("011" is not "11").
        if user.to_string() != message.split('.').nth(1)? {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.key, message.as_bytes(), &signature).ok()?;
        Some((user, list))
    }

    pub fn links(&self, user_id: i64, list: List) -> Links {
        let token = self.token(user_id, list);
        // The token is [A-Za-z0-9._-] only: safe in a query string and a header, unescaped.
        let url = format!("{}?token={token}", self.base_url);
        let list_unsubscribe = match &self.mailto {
            Some(address) => format!("<{url}>, <mailto:{address}?subject={token}>"),
            None => format!("<{url}>"),
        };
        Links {
            url,
            list_unsubscribe,
            list_unsubscribe_post: "List-Unsubscribe=One-Click",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_are_signed_per_user_and_list() {
        let u = Unsubscribe::new(SECRET, "https://tm.example/", None).expect("config");
        let t = u.token(11, List::Newsletter);
        assert!(t.starts_with("v1.11.newsletter."), "{t}");
        assert_eq!(u.verify(&t), Some((11, List::Newsletter)));
        // Another user's or another list's token cannot be made by editing this one.
        assert_eq!(u.verify(&t.replacen(".11.", ".12.", 1)), None);
        assert_eq!(u.verify(&t.replacen("newsletter", "marketing", 1)), None);
        assert_eq!(u.verify(&t.replacen(".11.", ".011.", 1)), None);
        assert_ne!(t, u.token(12, List::Newsletter));
        assert_ne!(t, u.token(11, List::Marketing));
        // Another secret signs differently.
        let other =
            Unsubscribe::new(&format!("{SECRET}x"), "https://tm.example", None).expect("config");
        assert_eq!(other.verify(&t), None);
        assert_eq!(u.verify("v1.11.newsletter"), None);
        assert_eq!(u.verify(""), None);
    }

    /// The documented format, rebuilt from its description (the e2e tests check it again with
    /// Python's `hmac`).
    #[test]
    fn token_matches_the_documented_format() {
        let u = Unsubscribe::new(SECRET, "https://tm.example", None).expect("config");
        let t = u.token(7, List::Marketing);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()),
            b"v1.7.marketing",
        );
        assert_eq!(
            t,
            format!("v1.7.marketing.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        );
        assert_eq!(t.len(), "v1.7.marketing.".len() + 43);
    }

    #[test]
    fn links_and_headers() {
        let u = Unsubscribe::new(SECRET, "https://tm.example/", Some("unsub@tm.example"))
            .expect("config");
        let l = u.links(5, List::Newsletter);
        let token = u.token(5, List::Newsletter);
        assert_eq!(
            l.url,
            format!("https://tm.example/unsubscribe?token={token}")
        );
        assert_eq!(
            l.list_unsubscribe,
            format!("<{}>, <mailto:unsub@tm.example?subject={token}>", l.url)
        );
        assert_eq!(l.list_unsubscribe_post, "List-Unsubscribe=One-Click");
        assert!(!l.url.contains("user="));
    }

    #[test]
    fn weak_or_malformed_settings_are_refused() {
        assert!(matches!(
            Unsubscribe::new("short", "https://tm.example", None),
            Err(UnsubscribeError::ShortSecret(5))
        ));
        assert!(matches!(
            Unsubscribe::new(
                SECRET,
                "https://tm.example",
                Some("a@b.example\r\nBcc: x@y")
            ),
            Err(UnsubscribeError::Mailto(..))
        ));
    }
}
