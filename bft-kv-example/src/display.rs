//! How the command line shows replies: bytes as text, non-printable bytes escaped.

use crate::ops::{KvError, KvReply};

/// Bytes as text: printable ASCII as is, anything else escaped (`\n`, `\xff`, ...).
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn show_value(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "(nil)".to_string(), show)
}

/// The text printed for a reply, or the store's error. Lists print one item per line; scan
/// entries print as `key<TAB>value`.
pub fn render(reply: &KvReply) -> Result<String, KvError> {
    Ok(match reply {
        KvReply::Value(value) => show_value(value.as_deref()),
        KvReply::Ok => "OK".to_string(),
        KvReply::Count(count) => count.to_string(),
        KvReply::Integer(value) => value.to_string(),
        KvReply::Swapped { swapped, current } => format!(
            "{}; current value: {}",
            if *swapped { "swapped" } else { "not swapped" },
            show_value(current.as_deref())
        ),
        KvReply::Values(values) => values
            .iter()
            .map(|v| show_value(v.as_deref()))
            .collect::<Vec<_>>()
            .join("\n"),
        KvReply::Entries(entries) => entries
            .iter()
            .map(|(k, v)| format!("{}\t{}", show(k), show(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        KvReply::Error(error) => return Err(error.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reply() {
        assert_eq!(render(&KvReply::Value(None)).unwrap(), "(nil)");
        assert_eq!(
            render(&KvReply::Value(Some(b"a\n\xff".to_vec()))).unwrap(),
            "a\\n\\xff"
        );
        assert_eq!(render(&KvReply::Ok).unwrap(), "OK");
        assert_eq!(render(&KvReply::Count(2)).unwrap(), "2");
        assert_eq!(render(&KvReply::Integer(-3)).unwrap(), "-3");
        let swapped = KvReply::Swapped {
            swapped: false,
            current: Some(b"x".to_vec()),
        };
        assert_eq!(render(&swapped).unwrap(), "not swapped; current value: x");
        let values = KvReply::Values(vec![None, Some(b"v".to_vec())]);
        assert_eq!(render(&values).unwrap(), "(nil)\nv");
        let entries = KvReply::Entries(vec![(b"k".to_vec(), b"v".to_vec())]);
        assert_eq!(render(&entries).unwrap(), "k\tv");
        assert_eq!(render(&KvReply::Entries(vec![])).unwrap(), "");
        let error = KvReply::Error(KvError::NotAnInteger);
        assert_eq!(render(&error), Err(KvError::NotAnInteger));
    }
}
