//! Members, their workspace memberships, sessions and invitations: the
//! statements, rows and writes, expanded per driver by [`people_impl!`] as
//! the keys are by `store_impl!`.

use chrono::{DateTime, TimeZone, Utc};
use keyward_core::member::{Invitation, Member, Membership, Session};

use crate::sql::Dialect;
use crate::{Result, StoreError};

/// A write of the people tables (part of a [`crate::Change`]).
#[derive(Debug, Clone)]
pub enum PeopleWrite {
    /// [`StoreError::Conflict`] with [`crate::Unique::MemberEmail`] when the
    /// email is taken.
    InsertMember(Member),
    /// Name, password hash and `updated_at`.
    UpdateMember(Member),
    /// [`StoreError::Conflict`] with [`crate::Unique::Membership`] when the
    /// member already belongs to the workspace.
    InsertMembership(Membership),
    /// [`StoreError::NotFound`] when not a member; [`StoreError::LastOwner`]
    /// when the workspace would be left without an owner.
    /// Only while the roles are still `expected` ([`StoreError::NotFound`]
    /// otherwise: read again).
    SetRoles {
        workspace_id: String,
        member_id: String,
        roles: Vec<String>,
        expected: Vec<String>,
    },
    /// Removes the member from the workspace and ends their sessions in it;
    /// refused like [`PeopleWrite::SetRoles`].
    RemoveMembership {
        workspace_id: String,
        member_id: String,
        at: DateTime<Utc>,
    },
    InsertSession(Session),
    /// Marks a live session fresh until `until` ([`StoreError::NotFound`]
    /// when it is no longer live).
    RefreshSession {
        id: String,
        until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    RevokeSession {
        id: String,
        at: DateTime<Utc>,
    },
    /// Ends every session of a member, in every workspace.
    RevokeAllSessions {
        member_id: String,
        at: DateTime<Utc>,
    },
    InsertInvitation(Invitation),
    /// Claims an open invitation ([`StoreError::NotFound`] when it was
    /// accepted meanwhile or has expired): one redemption, across nodes.
    AcceptInvitation {
        id: String,
        at: DateTime<Utc>,
    },
}

/// Reads of the people tables.
#[async_trait::async_trait]
pub trait People: Send + Sync {
    async fn member_by_email(&self, email: &str) -> Result<Option<Member>>;
    async fn get_member(&self, id: &str) -> Result<Option<Member>>;
    async fn membership(&self, workspace_id: &str, member_id: &str) -> Result<Option<Membership>>;
    /// Oldest first.
    async fn memberships_of(&self, member_id: &str) -> Result<Vec<Membership>>;
    /// Oldest first.
    async fn list_members(&self, workspace_id: &str) -> Result<Vec<(Member, Membership)>>;
    async fn session_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Session>>;
    async fn get_session(&self, id: &str) -> Result<Option<Session>>;
    async fn invitation_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Invitation>>;
}

const MEMBER_COLUMNS: &str = "id, email, name, password_hash, created_at, updated_at";
const SESSION_COLUMNS: &str =
    "id, token_hash, member_id, workspace_id, created_at, expires_at, fresh_until, revoked_at";
const INVITATION_COLUMNS: &str =
    "id, workspace_id, email, name, roles, token_hash, invited_by, created_at, expires_at, accepted_at";

pub struct PeopleStatements {
    pub insert_member: String,
    pub update_member: String,
    pub insert_membership: String,
    pub set_roles: String,
    pub remove_membership: String,
    pub revoke_member_sessions: String,
    pub count_owners: String,
    pub insert_session: String,
    pub refresh_session: String,
    pub revoke_session: String,
    pub revoke_all_sessions: String,
    pub insert_invitation: String,
    pub accept_invitation: String,
    pub member_by_email: String,
    pub get_member: String,
    pub membership: String,
    pub memberships_of: String,
    pub list_members: String,
    pub session_by_token: String,
    pub get_session: String,
    pub invitation_by_token: String,
}

impl PeopleStatements {
    pub fn new(dialect: Dialect) -> Self {
        let r = |sql: &str| dialect.render(sql);
        PeopleStatements {
            insert_member: r(&format!("INSERT INTO members ({MEMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)")),
            update_member: r("UPDATE members SET name = $2, password_hash = $3, updated_at = $4 WHERE id = $1"),
            insert_membership: r("INSERT INTO memberships (workspace_id, member_id, roles, created_at) \
                 VALUES ($1, $2, $3, $4)"),
            set_roles: r("UPDATE memberships SET roles = $3 WHERE workspace_id = $1 AND member_id = $2 AND roles = $4"),
            remove_membership: r("DELETE FROM memberships WHERE workspace_id = $1 AND member_id = $2"),
            revoke_member_sessions: r("UPDATE sessions SET revoked_at = $3 \
                 WHERE workspace_id = $1 AND member_id = $2 AND revoked_at IS NULL"),
            // Exact and case-sensitive on both backends (SQLite's LIKE is not).
            count_owners: r(&format!(
                "SELECT COUNT(*) FROM memberships WHERE workspace_id = $1 AND {} > 0",
                dialect.find_text("roles", "'\"owner\"'")
            )),
            insert_session: r(&format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            )),
            refresh_session: r("UPDATE sessions SET fresh_until = $2 \
                 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $3"),
            revoke_session: r("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"),
            revoke_all_sessions: r("UPDATE sessions SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL"),
            insert_invitation: r(&format!(
                "INSERT INTO invitations ({INVITATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )),
            accept_invitation: r("UPDATE invitations SET accepted_at = $2 \
                 WHERE id = $1 AND accepted_at IS NULL AND expires_at > $2"),
            member_by_email: r(&format!("SELECT {MEMBER_COLUMNS} FROM members WHERE email = $1")),
            get_member: r(&format!("SELECT {MEMBER_COLUMNS} FROM members WHERE id = $1")),
            membership: r("SELECT workspace_id, member_id, roles, created_at FROM memberships \
                 WHERE workspace_id = $1 AND member_id = $2"),
            memberships_of: r("SELECT workspace_id, member_id, roles, created_at FROM memberships \
                 WHERE member_id = $1 ORDER BY created_at, workspace_id"),
            list_members: r("SELECT m.id, m.email, m.name, m.password_hash, m.created_at, m.updated_at, \
                 s.workspace_id, s.member_id, s.roles, s.created_at AS joined_at \
                 FROM memberships s JOIN members m ON m.id = s.member_id \
                 WHERE s.workspace_id = $1 ORDER BY s.created_at, m.id"),
            session_by_token: r(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1")),
            get_session: r(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1")),
            invitation_by_token: r(&format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1")),
        }
    }
}

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v).single().ok_or_else(|| StoreError::Backend(format!("stored time {v} is out of range")))
}

fn digest(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| crate::sql::corrupt("token hash"))
}

pub fn roles_json(roles: &[String]) -> String {
    serde_json::to_string(roles).expect("strings serialize")
}

fn roles_from_json(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| crate::sql::corrupt("roles"))
}

#[derive(sqlx::FromRow)]
pub struct MemberRow {
    id: String,
    email: String,
    name: String,
    password_hash: String,
    created_at: i64,
    updated_at: i64,
}

impl MemberRow {
    pub fn into_member(self) -> Result<Member> {
        Ok(Member {
            id: self.id,
            email: self.email,
            name: self.name,
            password_hash: self.password_hash,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct MembershipRow {
    workspace_id: String,
    member_id: String,
    roles: String,
    created_at: i64,
}

impl MembershipRow {
    pub fn into_membership(self) -> Result<Membership> {
        Ok(Membership {
            workspace_id: self.workspace_id,
            member_id: self.member_id,
            roles: roles_from_json(&self.roles)?,
            created_at: from_ms(self.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct MemberListRow {
    id: String,
    email: String,
    name: String,
    password_hash: String,
    created_at: i64,
    updated_at: i64,
    workspace_id: String,
    member_id: String,
    roles: String,
    joined_at: i64,
}

impl MemberListRow {
    pub fn into_pair(self) -> Result<(Member, Membership)> {
        let membership = MembershipRow {
            workspace_id: self.workspace_id,
            member_id: self.member_id,
            roles: self.roles,
            created_at: self.joined_at,
        };
        let member = MemberRow {
            id: self.id,
            email: self.email,
            name: self.name,
            password_hash: self.password_hash,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        Ok((member.into_member()?, membership.into_membership()?))
    }
}

#[derive(sqlx::FromRow)]
pub struct SessionRow {
    id: String,
    token_hash: Vec<u8>,
    member_id: String,
    workspace_id: String,
    created_at: i64,
    expires_at: i64,
    fresh_until: Option<i64>,
    revoked_at: Option<i64>,
}

impl SessionRow {
    pub fn into_session(self) -> Result<Session> {
        Ok(Session {
            id: self.id,
            token_hash: digest(self.token_hash)?,
            member_id: self.member_id,
            workspace_id: self.workspace_id,
            created_at: from_ms(self.created_at)?,
            expires_at: from_ms(self.expires_at)?,
            fresh_until: self.fresh_until.map(from_ms).transpose()?,
            revoked_at: self.revoked_at.map(from_ms).transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct InvitationRow {
    id: String,
    workspace_id: String,
    email: String,
    name: String,
    roles: String,
    token_hash: Vec<u8>,
    invited_by: Option<String>,
    created_at: i64,
    expires_at: i64,
    accepted_at: Option<i64>,
}

impl InvitationRow {
    pub fn into_invitation(self) -> Result<Invitation> {
        Ok(Invitation {
            id: self.id,
            workspace_id: self.workspace_id,
            email: self.email,
            name: self.name,
            roles: roles_from_json(&self.roles)?,
            token_hash: digest(self.token_hash)?,
            invited_by: self.invited_by,
            created_at: from_ms(self.created_at)?,
            expires_at: from_ms(self.expires_at)?,
            accepted_at: self.accepted_at.map(from_ms).transpose()?,
        })
    }
}

/// `people_impl!(Store, Driver)`: the people writes (called from the
/// store's `apply`) and the [`People`] reads.
macro_rules! people_impl {
    ($store:ty, $db:ty) => {
        use $crate::people as pp;

        impl $crate::backend::Pools<$db> {
            async fn apply_people(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                write: &pp::PeopleWrite,
            ) -> $crate::Result<()> {
                use pp::{PeopleWrite, ms, roles_json};
                use $crate::StoreError;
                let sql = &self.sql.people;
                let (done, if_none) = match write {
                    PeopleWrite::InsertMember(m) => {
                        let q = sqlx::query(&sql.insert_member)
                            .bind(&m.id)
                            .bind(&m.email)
                            .bind(&m.name)
                            .bind(&m.password_hash)
                            .bind(ms(m.created_at))
                            .bind(ms(m.updated_at));
                        (q.execute(&mut *conn).await, None)
                    }
                    PeopleWrite::UpdateMember(m) => {
                        let q = sqlx::query(&sql.update_member)
                            .bind(&m.id)
                            .bind(&m.name)
                            .bind(&m.password_hash)
                            .bind(ms(m.updated_at));
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    PeopleWrite::InsertMembership(s) => {
                        let q = sqlx::query(&sql.insert_membership)
                            .bind(&s.workspace_id)
                            .bind(&s.member_id)
                            .bind(roles_json(&s.roles))
                            .bind(ms(s.created_at));
                        (q.execute(&mut *conn).await, None)
                    }
                    PeopleWrite::SetRoles { workspace_id, member_id, roles, expected } => {
                        self.lock_owners(conn, workspace_id).await?;
                        let q = sqlx::query(&sql.set_roles)
                            .bind(workspace_id)
                            .bind(member_id)
                            .bind(roles_json(roles))
                            .bind(roles_json(expected));
                        if q.execute(&mut *conn).await.map_err(self.classify)?.rows_affected() == 0 {
                            return Err(StoreError::NotFound);
                        }
                        return self.keep_an_owner(conn, workspace_id).await;
                    }
                    PeopleWrite::RemoveMembership { workspace_id, member_id, at } => {
                        self.lock_owners(conn, workspace_id).await?;
                        let q = sqlx::query(&sql.remove_membership).bind(workspace_id).bind(member_id);
                        if q.execute(&mut *conn).await.map_err(self.classify)?.rows_affected() == 0 {
                            return Err(StoreError::NotFound);
                        }
                        self.keep_an_owner(conn, workspace_id).await?;
                        let q =
                            sqlx::query(&sql.revoke_member_sessions).bind(workspace_id).bind(member_id).bind(ms(*at));
                        (q.execute(&mut *conn).await, None)
                    }
                    PeopleWrite::InsertSession(s) => {
                        let q = sqlx::query(&sql.insert_session)
                            .bind(&s.id)
                            .bind(&s.token_hash[..])
                            .bind(&s.member_id)
                            .bind(&s.workspace_id)
                            .bind(ms(s.created_at))
                            .bind(ms(s.expires_at))
                            .bind(s.fresh_until.map(ms))
                            .bind(s.revoked_at.map(ms));
                        (q.execute(&mut *conn).await, None)
                    }
                    PeopleWrite::RefreshSession { id, until, at } => {
                        let q = sqlx::query(&sql.refresh_session).bind(id).bind(ms(*until)).bind(ms(*at));
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                    PeopleWrite::RevokeSession { id, at } => {
                        (sqlx::query(&sql.revoke_session).bind(id).bind(ms(*at)).execute(&mut *conn).await, None)
                    }
                    PeopleWrite::RevokeAllSessions { member_id, at } => {
                        let q = sqlx::query(&sql.revoke_all_sessions).bind(member_id).bind(ms(*at));
                        (q.execute(&mut *conn).await, None)
                    }
                    PeopleWrite::InsertInvitation(i) => {
                        let q = sqlx::query(&sql.insert_invitation)
                            .bind(&i.id)
                            .bind(&i.workspace_id)
                            .bind(&i.email)
                            .bind(&i.name)
                            .bind(roles_json(&i.roles))
                            .bind(&i.token_hash[..])
                            .bind(&i.invited_by)
                            .bind(ms(i.created_at))
                            .bind(ms(i.expires_at))
                            .bind(i.accepted_at.map(ms));
                        (q.execute(&mut *conn).await, None)
                    }
                    PeopleWrite::AcceptInvitation { id, at } => {
                        let q = sqlx::query(&sql.accept_invitation).bind(id).bind(ms(*at));
                        (q.execute(&mut *conn).await, Some(StoreError::NotFound))
                    }
                };
                match (done.map_err(self.classify)?.rows_affected(), if_none) {
                    (0, Some(e)) => Err(e),
                    _ => Ok(()),
                }
            }

            /// Orders changes to a workspace's owners across nodes
            /// (PostgreSQL; SQLite has one writer).
            async fn lock_owners(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                workspace_id: &str,
            ) -> $crate::Result<()> {
                if let Some(lock) = &self.sql.lock_workspace {
                    sqlx::query(lock).bind(workspace_id).execute(&mut *conn).await.map_err(self.classify)?;
                }
                Ok(())
            }

            async fn keep_an_owner(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                workspace_id: &str,
            ) -> $crate::Result<()> {
                let owners: i64 = sqlx::query_scalar(&self.sql.people.count_owners)
                    .bind(workspace_id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(self.classify)?;
                if owners == 0 { Err($crate::StoreError::LastOwner) } else { Ok(()) }
            }
        }

        #[async_trait::async_trait]
        impl pp::People for $store {
            async fn member_by_email(&self, email: &str) -> $crate::Result<Option<keyward_core::member::Member>> {
                if $crate::sql::unstorable(email) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(p, &p.sql.people.member_by_email, pp::MemberRow::into_member, email)
            }

            async fn get_member(&self, id: &str) -> $crate::Result<Option<keyward_core::member::Member>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(p, &p.sql.people.get_member, pp::MemberRow::into_member, id)
            }

            async fn membership(
                &self,
                workspace_id: &str,
                member_id: &str,
            ) -> $crate::Result<Option<keyward_core::member::Membership>> {
                if $crate::sql::unstorable(workspace_id) || $crate::sql::unstorable(member_id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.people.membership,
                    pp::MembershipRow::into_membership,
                    workspace_id,
                    member_id
                )
            }

            async fn memberships_of(&self, member_id: &str) -> $crate::Result<Vec<keyward_core::member::Membership>> {
                let p = &self.pools;
                $crate::backend::all_rows!(
                    p,
                    &p.sql.people.memberships_of,
                    pp::MembershipRow::into_membership,
                    member_id
                )
            }

            async fn list_members(
                &self,
                workspace_id: &str,
            ) -> $crate::Result<Vec<(keyward_core::member::Member, keyward_core::member::Membership)>> {
                let p = &self.pools;
                $crate::backend::all_rows!(p, &p.sql.people.list_members, pp::MemberListRow::into_pair, workspace_id)
            }

            async fn session_by_token(
                &self,
                token_hash: &[u8; 32],
            ) -> $crate::Result<Option<keyward_core::member::Session>> {
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.people.session_by_token,
                    pp::SessionRow::into_session,
                    &token_hash[..]
                )
            }

            async fn get_session(&self, id: &str) -> $crate::Result<Option<keyward_core::member::Session>> {
                if $crate::sql::unstorable(id) {
                    return Ok(None);
                }
                let p = &self.pools;
                $crate::backend::optional_row!(p, &p.sql.people.get_session, pp::SessionRow::into_session, id)
            }

            async fn invitation_by_token(
                &self,
                token_hash: &[u8; 32],
            ) -> $crate::Result<Option<keyward_core::member::Invitation>> {
                let p = &self.pools;
                $crate::backend::optional_row!(
                    p,
                    &p.sql.people.invitation_by_token,
                    pp::InvitationRow::into_invitation,
                    &token_hash[..]
                )
            }
        }
    };
}
pub(crate) use people_impl;
