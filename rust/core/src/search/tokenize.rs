//! The one tokenizer of full-text search: documents, queries and read-set keys all use it.
//!
//! Text is split on every character that is not alphanumeric (Unicode's `Alphabetic` or
//! `Numeric`), each piece is lowercased character by character, and pieces longer than
//! [`MAX_TERM_BYTES`] bytes are dropped (as tantivy's `SimpleTokenizer`, `LowerCaser` and
//! `RemoveLongFilter` do; Convex's search tokenizes the same way).

/// Terms longer than this many bytes (UTF-8, after lowercasing) are not indexed or searched.
pub const MAX_TERM_BYTES: usize = 128;

/// Call `f` with each term of `text`, in order (repeats included).
pub fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    let mut term = String::new();
    for piece in text.split(|c: char| !c.is_alphanumeric()) {
        if piece.is_empty() {
            continue;
        }
        term.clear();
        if piece.is_ascii() {
            term.push_str(piece);
            term.make_ascii_lowercase();
        } else {
            term.extend(piece.chars().flat_map(char::to_lowercase));
        }
        if term.len() <= MAX_TERM_BYTES {
            f(&term);
        }
    }
}

/// The terms of `text`, in order.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |t| out.push(t.to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_non_alphanumerics_and_lowercases() {
        assert_eq!(
            terms("Hello, wor-LD! 42x  ÉCOLE_été"),
            ["hello", "wor", "ld", "42x", "école", "été"]
        );
        assert!(terms("  ,;  ").is_empty());
        let long = "a".repeat(MAX_TERM_BYTES + 1);
        assert_eq!(terms(&format!("ok {long} fine")), ["ok", "fine"]);
    }
}
