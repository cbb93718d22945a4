//! Secrets out of logs. Every log line either binary writes goes through [`Secrets::redact`]:
//! the database passwords, tokens and keys the process was given are replaced by `***`
//! wherever they appear — in our own fields, in a driver's debug dump of its connection
//! options, in the text of an error that quotes a malformed URL. [`url`] strips the
//! credentials of a connection string for the places that name the database on purpose.

/// The secret values one process holds.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

/// Shorter values would blank out ordinary words.
const MIN_LEN: usize = 4;

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret value (ignored when empty or too short to be one).
    pub fn value(mut self, v: Option<&str>) -> Self {
        if let Some(v) = v.map(str::trim).filter(|v| v.len() >= MIN_LEN)
            && !self.values.iter().any(|x| x == v)
        {
            self.values.push(v.to_string());
            // The JSON log format escapes quotes and backslashes: catch that spelling too.
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            if escaped != v {
                self.values.push(escaped);
            }
        }
        self
    }

    /// Adds the password (raw and percent-decoded) and the user of a connection string, even a
    /// malformed one.
    pub fn url(self, url: Option<&str>) -> Self {
        let Some(url) = url else {
            return self;
        };
        let Some((_, rest)) = url.split_once("://") else {
            return self;
        };
        let Some(at) = rest.rfind('@') else {
            return self;
        };
        let userinfo = &rest[..at];
        let password = userinfo.split_once(':').map(|(_, p)| p);
        let decoded = password.map(percent_decode);
        self.value(password).value(decoded.as_deref())
    }

    /// Every configured secret replaced by `***`.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.values.iter().any(|v| text.contains(v.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        // Longest first, so a secret containing another is replaced whole.
        let mut values: Vec<&String> = self.values.iter().collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for v in values {
            out = out.replace(v.as_str(), "***");
        }
        std::borrow::Cow::Owned(out)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The exit code of a binary whose run ended with `result`. An error is printed to stderr
    /// with its chain of causes (`{:#}`), through the same redaction as the log: a database
    /// error may quote the URL.
    pub fn exit_code<E: std::fmt::Display>(&self, result: Result<(), E>) -> std::process::ExitCode {
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {}", self.redact(&format!("{e:#}")));
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection string with its credentials replaced by `***` (the same text for every
/// caller; a string that is not a URL is reduced to its scheme).
pub fn url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
            None => url.to_string(),
        },
        None if url.contains('@') || url.contains(':') => "<not a URL>".to_string(),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_of_well_formed_and_malformed_urls_are_found_and_replaced() {
        let s = Secrets::new()
            .url(Some("postgres://app:s3cr%40t@db:5432/x"))
            .url(Some("mysql://u:hunter22@h:notaport/db"))
            .value(Some("executor-token-1"))
            .value(Some("ab"));
        let line =
            "connecting to postgres://app:s3cr%40t@db / s3cr@t / hunter22 / executor-token-1 / ab";
        let out = s.redact(line);
        assert!(!out.contains("s3cr"), "{out}");
        assert!(!out.contains("hunter22"), "{out}");
        assert!(!out.contains("executor-token-1"), "{out}");
        assert!(out.contains("/ ab"), "too short to be a secret: {out}");
        assert_eq!(s.redact("nothing here"), "nothing here");
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(url("postgres://u:p@h:1/d"), "postgres://***@h:1/d");
        assert_eq!(url("sqlite://./x.db?mode=rwc"), "sqlite://./x.db?mode=rwc");
        assert_eq!(url("u:p@h"), "<not a URL>");
        assert_eq!(url("postgres://u:p@@h/d"), "postgres://***@h/d");
    }
}
