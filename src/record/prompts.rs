//! The prompts file: one prompt per line, or JSON Lines with a `"prompt"` string on
//! every line (the form is taken from the first non-blank line: `{` starts JSON). Blank
//! lines are skipped; a CR before the newline and a UTF-8 byte-order mark are ignored.

use std::path::Path;

use crate::error::{Error, Result};

/// One prompt and the line it came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub line: usize,
}

pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(path, &bytes)
}

pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Prompt>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut jsonl = None;
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw)
            .map_err(|_| Error::at_line(path, line as u64, "not valid UTF-8 text"))?;
        if text.trim().is_empty() {
            continue;
        }
        let is_json = *jsonl.get_or_insert_with(|| text.trim_start().starts_with('{'));
        let prompt = if is_json {
            from_json(text).map_err(|m| Error::at_line(path, line as u64, m))?
        } else {
            text.to_string()
        };
        out.push(Prompt { text: prompt, line });
    }
    if out.is_empty() {
        return Err(Error::in_file(
            path,
            "no prompts: expected one prompt per line, or JSON Lines with a \"prompt\" field",
        ));
    }
    Ok(out)
}

fn from_json(text: &str) -> std::result::Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!("not a JSON object (the file is JSON Lines, as its first prompt line is): {e}")
    })?;
    match value.get("prompt") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::String(_)) => Err("the \"prompt\" is empty".into()),
        Some(_) => Err("\"prompt\" is not a string".into()),
        None => Err("no \"prompt\" field (JSON Lines need one on every line)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Prompt>> {
        parse(Path::new("p.txt"), text.as_bytes())
    }

    #[test]
    fn lines_skip_blanks_and_keep_line_numbers() {
        let got = p("\u{feff}first\r\n\n  \nsecond one\n").unwrap();
        assert_eq!(
            got,
            vec![
                Prompt {
                    text: "first".into(),
                    line: 1
                },
                Prompt {
                    text: "second one".into(),
                    line: 4
                },
            ]
        );
    }

    #[test]
    fn jsonl_takes_the_prompt_field() {
        let got = p("{\"prompt\": \"a\\nb\", \"id\": 3}\n\n{\"prompt\":\"c\"}").unwrap();
        assert_eq!(got[0].text, "a\nb");
        assert_eq!(
            got[1],
            Prompt {
                text: "c".into(),
                line: 3
            }
        );
    }

    #[test]
    fn bad_input_is_an_error_with_its_line() {
        assert!(p("").unwrap_err().0.contains("no prompts"));
        assert!(p("\n \r\n").unwrap_err().0.contains("no prompts"));
        let e = p("{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n").unwrap_err().0;
        assert!(e.starts_with("p.txt:2: no \"prompt\""), "{e}");
        let e = p("{\"prompt\": 3}").unwrap_err().0;
        assert!(e.contains("not a string"), "{e}");
        let e = p("{\"prompt\": \"a\"}\nplain\n").unwrap_err().0;
        assert!(e.starts_with("p.txt:2: not a JSON object"), "{e}");
        assert!(parse(Path::new("p"), b"ok\n\xff\n")
            .unwrap_err()
            .0
            .contains("p:2"));
    }
}
