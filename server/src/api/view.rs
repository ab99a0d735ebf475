//! `view` without `watch`: the saved notebook as a read-only page, and downloads.
//!
//! - `GET /view/{fileId}`: the notebook as the file holds it, rendered on the server with every
//!   piece of text escaped (markdown shown as its source, no notebook HTML or script runs; PNG
//!   and JPEG outputs shown as images), under a CSP that allows nothing else.
//! - `GET /api/notebooks/{fileId}/download?format=ipynb|py`: the file itself, or its code as a
//!   Python script in the percent format (`# %%` cells, markdown as comments).

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use collab::{Capabilities, CellType, FileId, Notebook};
use serde::Deserialize;
use serde_json::Value;

use crate::access::principal::Principal;
use crate::http::error::{ApiError, ApiResult};
use crate::http::html::escape;
use crate::AppState;

/// The saved notebook a principal may view: its path and bytes.
fn saved(state: &AppState, principal: &Principal, file_id: &str) -> ApiResult<(String, Vec<u8>)> {
    let not_found = || ApiError::not_found("no notebook with this id");
    let file = FileId::parse(file_id).ok_or_else(not_found)?;
    if !principal
        .current_caps_for(&state.access, file)
        .contains(Capabilities::VIEW)
    {
        return Err(not_found());
    }
    let store_path = state
        .store
        .path_for_id(state.spaces.store_root(), file)
        .map_err(|e| ApiError::internal("cannot look the notebook up", e))?
        .ok_or_else(not_found)?;
    let space = state.spaces.space_of(&store_path)?;
    let api_path = space.api_path(&store_path).unwrap_or(store_path);
    let path = space.resolve(&api_path)?;
    let bytes = space.io(|| std::fs::read(path)).map_err(|_| not_found())?;
    Ok((api_path, bytes))
}

/// Strips terminal colour codes from tracebacks.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn render_output(output: &Value, html: &mut String) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    };
    match output["output_type"].as_str() {
        Some("stream") => {
            html.push_str(&format!(
                "<pre class=out>{}</pre>",
                escape(&text(&output["text"]))
            ));
        }
        Some("error") => {
            let lines: Vec<String> = output["traceback"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).map(strip_ansi).collect())
                .unwrap_or_default();
            html.push_str(&format!(
                "<pre class=err>{}</pre>",
                escape(&lines.join("\n"))
            ));
        }
        Some("display_data") | Some("execute_result") => {
            let data = &output["data"];
            for (mime, kind) in [("image/png", "png"), ("image/jpeg", "jpeg")] {
                if let Some(b64) = data[mime].as_str() {
                    let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
                    if clean
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
                    {
                        html.push_str(&format!(
                            "<img alt='' src='data:image/{kind};base64,{clean}'>"
                        ));
                        return;
                    }
                }
            }
            html.push_str(&format!(
                "<pre class=out>{}</pre>",
                escape(&text(&data["text/plain"]))
            ));
        }
        _ => {}
    }
}

/// The page's security headers: nothing runs, nothing loads but inline images.
fn locked_down(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub async fn page(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    UrlPath(file_id): UrlPath<String>,
) -> ApiResult<Response> {
    let (api_path, bytes) = saved(&state, &principal, &file_id)?;
    let notebook = Notebook::from_ipynb(&bytes)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>{0} — Quire</title>\
         <style>body{{font:14px system-ui;max-width:60em;margin:2em auto}}pre{{white-space:pre-wrap;padding:.5em;margin:.2em 0}}\
         .code{{background:#f5f5f5}}.md{{background:#fff;border-left:3px solid #ddd}}.err{{background:#fdd}}.out{{background:#fff}}img{{max-width:100%}}</style>\
         <p>Read-only view of <b>{0}</b> as saved. <a href='/api/notebooks/{1}/download?format=ipynb'>Download .ipynb</a> · \
         <a href='/api/notebooks/{1}/download?format=py'>Download .py</a></p>",
        escape(&api_path),
        escape(&file_id)
    );
    for cell in &notebook.cells {
        match cell.cell_type {
            CellType::Code => {
                let count = cell
                    .execution_count
                    .as_i64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| " ".into());
                html.push_str(&format!(
                    "<pre class=code>[{count}] {}</pre>",
                    escape(&cell.source)
                ));
                for output in &cell.outputs {
                    render_output(output, &mut html);
                }
            }
            _ => html.push_str(&format!("<pre class=md>{}</pre>", escape(&cell.source))),
        }
    }
    Ok(locked_down(axum::response::Html(html).into_response()))
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    format: Option<String>,
}

/// A notebook's code as a percent-format script.
fn to_script(notebook: &Notebook) -> String {
    let mut out = String::new();
    for cell in &notebook.cells {
        match cell.cell_type {
            CellType::Code => {
                out.push_str("# %%\n");
                out.push_str(&cell.source);
            }
            CellType::Markdown | CellType::Raw => {
                out.push_str(if cell.cell_type == CellType::Markdown {
                    "# %% [markdown]\n"
                } else {
                    "# %% [raw]\n"
                });
                let commented: Vec<String> = cell
                    .source
                    .lines()
                    .map(|l| {
                        if l.is_empty() {
                            "#".to_string()
                        } else {
                            format!("# {l}")
                        }
                    })
                    .collect();
                out.push_str(&commented.join("\n"));
            }
        }
        out.push_str("\n\n");
    }
    out
}

pub async fn download(
    State(state): State<AppState>,
    axum::Extension(principal): axum::Extension<Principal>,
    UrlPath(file_id): UrlPath<String>,
    Query(query): Query<DownloadQuery>,
) -> ApiResult<Response> {
    let (api_path, bytes) = saved(&state, &principal, &file_id)?;
    let name = api_path.rsplit('/').next().unwrap_or("notebook.ipynb");
    let stem = name.strip_suffix(".ipynb").unwrap_or(name);
    let (body, filename, mime) = match query.format.as_deref().unwrap_or("ipynb") {
        "ipynb" => (bytes, name.to_string(), "application/x-ipynb+json"),
        "py" => {
            let notebook = Notebook::from_ipynb(&bytes)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            (
                to_script(&notebook).into_bytes(),
                format!("{stem}.py"),
                "text/x-python; charset=utf-8",
            )
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown format {other:?} (ipynb or py)"
            )))
        }
    };
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(&filename, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
