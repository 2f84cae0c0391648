//! Tokenizer parity with Python `tokenizers` (ids and decoded text recorded by
//! tests/fixtures/generate.py) on the real Gemma tokenizer and on the small trained one.

mod common;

use common::fixture;
use mgm::text::stream::TextStream;
use mgm::text::Tokenizer;
use serde_json::Value;

fn cases(which: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json[which]["cases"].as_array().unwrap_or_else(|| panic!("no {which} cases")).clone()
}

fn check(tok: &Tokenizer, which: &str) {
    let cases = cases(which);
    assert!(cases.len() >= 15);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, want, "{which}: ids of {text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), case["decoded"].as_str().unwrap(), "{which}: decode {text:?}");
        assert_eq!(tok.decode(&ids, true).unwrap(), case["decoded_skip_special"].as_str().unwrap(), "{which}: decode {text:?}");

        // Streaming, one token at a time, plus what it holds back at the end (a trailing
        // byte-fallback run), adds up to the same text and never splits a character.
        let mut stream = TextStream::default();
        let mut streamed: String = ids.iter().map(|&id| stream.push(tok, id).unwrap()).collect();
        streamed += &stream.finish(tok).unwrap();
        assert_eq!(streamed, case["decoded_skip_special"].as_str().unwrap(), "{which}: stream {text:?}");
    }
}

#[test]
fn real_gemma_tokenizer_matches_python() {
    let path = fixture(".tokenizer/tokenizer.json");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("{} missing: run scripts/fetch-tokenizer.sh first", path.display()));
    let tok = Tokenizer::from_bytes(&bytes).unwrap();
    assert_eq!((tok.bos, tok.eos, tok.end_of_turn), (2, 1, Some(107)));
    assert_eq!(tok.vocab_size(), 256000);
    check(&tok, "gemma");
}

#[test]
fn small_trained_tokenizer_matches_python() {
    let tok = Tokenizer::from_bytes(&std::fs::read(fixture("tokenizer_small/tokenizer.json")).unwrap()).unwrap();
    check(&tok, "small");
}

#[test]
fn a_file_that_is_not_a_tokenizer_is_a_clear_error() {
    let err = Tokenizer::from_bytes(b"{\"not\": \"a tokenizer\"}").err().unwrap();
    assert_eq!(err.code(), "format");
    assert!(err.message().starts_with("tokenizer.json:"), "{err}");
}

#[test]
fn message_text_encodes_special_token_strings_as_text() {
    let tok = Tokenizer::from_bytes(&std::fs::read(fixture(".tokenizer/tokenizer.json")).unwrap()).unwrap();
    for case in cases("gemma") {
        let text = case["text"].as_str().unwrap();
        let literal = tok.encode_text(text).unwrap();
        if !text.contains("<start_of_turn>") {
            // No special strings: text and parsed encodings agree with Python's ids
            // (`<image>`, `<h>`, newlines and spaces included).
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().skip(1).map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(literal, want, "{text:?}");
        } else {
            // The chat template's markers typed as text: no turn-marker ids, the same text back.
            assert!(!literal.iter().any(|id| [106, 107].contains(id)), "{literal:?}");
            assert_eq!(tok.decode(&literal, false).unwrap(), text);
            assert!(literal.len() > tok.encode(text, false).unwrap().len());
        }
    }
}
