//! Rights that change while people are connected: a link changed, revoked or expired, a grant
//! or a project membership changed, a login ended. Each reaches the rooms at once (lowered
//! rights refuse the next write; someone who may no longer watch is disconnected).

use std::time::Duration;

use collab::{Capabilities, FileId, GrantSource, LinkId, RoomInput, UserName};

use crate::access::login::live_login;
use crate::access::principal::person_caps;
use crate::storage::now_secs;
use crate::AppState;

/// Tells every open room of the notebook that a link's rights changed (`None`: revoked).
pub async fn announce_link(
    state: &AppState,
    file: FileId,
    link: &LinkId,
    caps: Option<Capabilities>,
) {
    for room in state.rooms.of_file(file) {
        let source = GrantSource::Link(link.clone());
        let _ = room.send(RoomInput::Permissions { source, caps }).await;
    }
}

/// Closes the sockets opened through links as the links expire (checked every second).
pub async fn expire_links(state: AppState) {
    let mut checked = now_secs();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = now_secs();
        match state.store.links_expiring(checked, now) {
            Ok(expired) => {
                for (file, link) in expired {
                    if let Some(file) = FileId::parse(&file) {
                        announce_link(&state, file, &link, None).await;
                    }
                }
                checked = now;
            }
            Err(e) => tracing::warn!("cannot look for expired links: {e}"),
        }
    }
}

/// Works out afresh the rights of the people connected to rooms (of `file`, or all files; or
/// only `username`'s) and tells the rooms: lowered rights refuse the next write, and a person who
/// may no longer watch is disconnected.
pub async fn recheck(state: &AppState, file: Option<FileId>, username: Option<&UserName>) {
    for (f, user) in state.rooms.people() {
        if file.is_some_and(|x| x != f) || username.is_some_and(|u| *u != user) {
            continue;
        }
        let caps = person_caps(&state.access, &user, f);
        let caps = caps.contains(Capabilities::WATCH).then_some(caps);
        for room in state.rooms.of_file(f) {
            let source = GrantSource::Person(user.clone());
            let _ = room.send(RoomInput::Permissions { source, caps }).await;
        }
    }
}

/// Closes the sockets of logins that ended since they were opened (their password changed,
/// their account was locked or removed, they expired); checked every second.
pub async fn end_stale_logins(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for login in state.rooms.logins() {
            if live_login(&state.access, &login).is_none() {
                state.rooms.close_login(&login).await;
            }
        }
    }
}
