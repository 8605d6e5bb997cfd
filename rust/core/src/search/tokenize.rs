//! The one tokenizer of full-text search: documents (in tantivy too), queries and read-set
//! keys all use it.
//!
//! Text is split on every character that is not alphanumeric (Unicode's `Alphabetic` or
//! `Numeric`), each piece is lowercased character by character, and pieces longer than
//! [`MAX_TERM_BYTES`] bytes or more are dropped (as tantivy's `SimpleTokenizer`, `LowerCaser` and
//! `RemoveLongFilter` do; Convex's search tokenizes the same way).

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Terms of this many bytes or more (UTF-8, after lowercasing) are not indexed or searched
/// (Convex's `MAX_TEXT_TERM_LENGTH`, applied as tantivy's `RemoveLongFilter` does).
pub const MAX_TERM_BYTES: usize = 32;

/// The name the tokenizer is registered under in each tantivy index.
pub const TOKENIZER_NAME: &str = "reactive";

/// Find the next term of `text` at or after byte `*pos`: writes it (lowercased) to `out`,
/// its byte span to `span`, moves `*pos` past it. Returns `false` at the end.
fn next_term(text: &str, pos: &mut usize, out: &mut String, span: &mut (usize, usize)) -> bool {
    loop {
        let rest = &text[*pos..];
        let Some(start) = rest.find(char::is_alphanumeric) else {
            *pos = text.len();
            return false;
        };
        let from = *pos + start;
        let len = text[from..]
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(text.len() - from);
        let piece = &text[from..from + len];
        *pos = from + len;
        out.clear();
        if piece.is_ascii() {
            out.push_str(piece);
            out.make_ascii_lowercase();
        } else {
            out.extend(piece.chars().flat_map(char::to_lowercase));
        }
        if out.len() < MAX_TERM_BYTES {
            *span = (from, from + len);
            return true;
        }
    }
}

/// Call `f` with each term of `text`, in order (repeats included).
pub fn for_each_term(text: &str, mut f: impl FnMut(&str)) {
    let mut pos = 0;
    let mut term = String::new();
    let mut span = (0, 0);
    while next_term(text, &mut pos, &mut term, &mut span) {
        f(&term);
    }
}

/// Whether `text` holds at least one term (stops at the first).
pub fn has_term(text: &str) -> bool {
    let mut pos = 0;
    let mut term = String::new();
    let mut span = (0, 0);
    next_term(text, &mut pos, &mut term, &mut span)
}

/// The terms of `text`, in order.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_term(text, |t| out.push(t.to_owned()));
    out
}

/// The same tokenizer for tantivy (registered as [`TOKENIZER_NAME`]).
#[derive(Clone, Default)]
pub struct ReactiveTokenizer {
    token: Token,
}

/// Its token stream.
pub struct ReactiveTokenStream<'a> {
    text: &'a str,
    pos: usize,
    token: &'a mut Token,
}

impl Tokenizer for ReactiveTokenizer {
    type TokenStream<'a> = ReactiveTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> ReactiveTokenStream<'a> {
        self.token.reset();
        ReactiveTokenStream {
            text,
            pos: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for ReactiveTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let mut span = (0, 0);
        if next_term(self.text, &mut self.pos, &mut self.token.text, &mut span) {
            self.token.position = self.token.position.wrapping_add(1);
            self.token.offset_from = span.0;
            self.token.offset_to = span.1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
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
        let long = "a".repeat(MAX_TERM_BYTES);
        assert_eq!(terms(&format!("ok {long} fine")), ["ok", "fine"]);
    }

    #[test]
    fn tantivy_stream_gives_the_same_terms() {
        let text = "Ünïcode  TEXT, with_under-scores 123 ok";
        let mut tokenizer = ReactiveTokenizer::default();
        let mut stream = tokenizer.token_stream(text);
        let mut got = Vec::new();
        let mut positions = Vec::new();
        while stream.advance() {
            got.push(stream.token().text.clone());
            positions.push(stream.token().position);
        }
        assert_eq!(got, terms(text));
        assert_eq!(positions, (0..got.len()).collect::<Vec<_>>());
    }
}
