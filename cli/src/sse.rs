//! A parser for Server-Sent Events as the api sends them: `event:`, `id:`,
//! `data:` fields, comments (`:`) ignored, an event dispatched at a blank
//! line. Enough of the WHATWG rules for one well-known server; `retry:`
//! is ignored (the caller decides how to reconnect).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` (empty: the default `message`).
    pub event: String,
    /// `id:` of this event, if it had one.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Feeds bytes in, takes whole events out.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Adds `bytes` and returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            let had_data = std::mem::replace(&mut self.has_data, false);
            return (had_data || !event.event.is_empty()).then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_string(),
            "id" => self.current.id = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments_are_skipped() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nevent: li").is_empty());
        let events = parser.push(b"ne\r\nid: 1-0\ndata: a\ndata:b\n\nevent: result\ndata: {}\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "line".into(),
                    id: Some("1-0".into()),
                    data: "a\nb".into()
                },
                SseEvent {
                    event: "result".into(),
                    id: None,
                    data: "{}".into()
                }
            ]
        );
    }
}
