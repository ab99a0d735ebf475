//! What a room's document holds: a notebook, or a plain text file (JupyterLab opens every file
//! through a room when collaboration is on, and a `.py` or `.md` file is a `text:file` room).
//!
//! A text file's Y document (jupyter_ydoc's YUnicode) has a `source` Text root and the `state`
//! Map. A text file must be UTF-8; it is written back exactly as typed.

use yrs::{Doc, GetString, ReadTxn, Text, Transact, WriteTxn};

use crate::notebook::new_doc_with_client;
use crate::{Notebook, NotebookError, LOAD_CLIENT_ID};

/// The kinds of document a room can hold, named as in JupyterLab's room ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// `json:notebook`
    Notebook,
    /// `text:file`
    Text,
}

impl DocumentKind {
    /// From the `format` and `type` of a room id or a session request.
    pub fn from_format_and_type(format: &str, kind: &str) -> Option<DocumentKind> {
        match (format, kind) {
            ("json", "notebook") => Some(DocumentKind::Notebook),
            ("text", "file") => Some(DocumentKind::Text),
            _ => None,
        }
    }

    /// The `format:type` prefix of a room id.
    pub fn room_prefix(self) -> &'static str {
        match self {
            DocumentKind::Notebook => "json:notebook",
            DocumentKind::Text => "text:file",
        }
    }

    /// Parses a file's bytes; the error names the problem.
    pub fn parse(self, bytes: &[u8]) -> Result<Content, NotebookError> {
        match self {
            DocumentKind::Notebook => Notebook::from_ipynb(bytes).map(Content::Notebook),
            DocumentKind::Text => std::str::from_utf8(bytes)
                .map(|text| Content::Text(text.to_string()))
                .map_err(|_| NotebookError::NotText),
        }
    }
}

/// A document's content, independent of its Yjs history.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    Notebook(Notebook),
    Text(String),
}

impl Content {
    /// A new Y document holding this content, built under the fixed loading client id.
    pub fn to_doc(&self) -> Doc {
        match self {
            Content::Notebook(notebook) => notebook.to_doc(),
            Content::Text(text) => {
                let doc = new_doc_with_client(LOAD_CLIENT_ID);
                {
                    let mut txn = doc.transact_mut();
                    let source = txn.get_or_insert_text("source");
                    source.insert(&mut txn, 0, text);
                }
                doc
            }
        }
    }

    pub fn from_doc<T: ReadTxn>(kind: DocumentKind, txn: &T) -> Content {
        match kind {
            DocumentKind::Notebook => Content::Notebook(Notebook::from_doc(txn)),
            DocumentKind::Text => Content::Text(
                txn.get_text("source")
                    .map(|t| t.get_string(txn))
                    .unwrap_or_default(),
            ),
        }
    }

    /// The bytes to write to the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Content::Notebook(notebook) => notebook.to_ipynb(),
            Content::Text(text) => text.as_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_exactly() {
        let original = "def f():\r\n    return '漢字 🌍'\n\tno newline at end";
        let content = DocumentKind::Text.parse(original.as_bytes()).unwrap();
        let doc = content.to_doc();
        let back = Content::from_doc(DocumentKind::Text, &doc.transact());
        assert_eq!(back.to_bytes(), original.as_bytes());
        assert_eq!(
            DocumentKind::Text.parse(b"\xff").unwrap_err().to_string(),
            "not a text file: it is not valid UTF-8"
        );
    }
}
