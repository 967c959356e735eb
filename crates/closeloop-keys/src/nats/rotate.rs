//! Master key rotation on the stream: every live key rewrapped under the new master key in a new
//! epoch, then the new meta record (the commit point), then the old versions erased. See the
//! module documentation for what a crash at each point leaves.

use super::Inner;
use super::format::{KeyRecord, MetaRecord, Record};
use super::io::{KeyStream, Published, stream_path};
use super::open::new_epoch;
use super::subjects::{META, Topic};
use crate::wrap::{unwrap_data_key, wrap_data_key};
use crate::{KeyError, MasterKey};

/// One rewrapped key, ready to publish.
pub(super) struct Rewrap {
    pub(super) subject: String,
    pub(super) payload: Vec<u8>,
}

/// A rotation, planned on the mirror.
pub(super) struct Plan {
    /// The new epoch.
    pub(super) epoch: u64,
    pub(super) rewraps: Vec<Rewrap>,
    /// The new meta record's payload.
    pub(super) meta: Vec<u8>,
    /// The sequence of the meta record in force.
    pub(super) old_meta_seq: u64,
    /// The stream's last sequence, as the mirror applied it, the first write is fenced on.
    pub(super) last_in_stream: u64,
}

impl Inner {
    pub(super) async fn rotate(&self, new: &MasterKey) -> Result<usize, KeyError> {
        let stream = self.stream()?;
        self.catch_up().await?;
        let plan = self.plan_rotation(new)?;
        let rewrapped = plan.rewraps.len();
        let mut last = plan.last_in_stream;
        let mut published = Vec::with_capacity(rewrapped);
        // Each write is fenced on the one before: nobody else may write until the commit.
        for rewrap in &plan.rewraps {
            let answer = stream
                .publish(rewrap.subject.clone(), rewrap.payload.clone(), last, None)
                .await;
            let seq = match answer {
                Ok(Published::At(seq)) => seq,
                Ok(Published::Conflict) => {
                    return Err(self.abort(stream, &published, conflict(stream)).await);
                }
                Err(error) => return Err(self.abort(stream, &published, error).await),
            };
            self.applied_own(seq, &rewrap.subject, &rewrap.payload)
                .await?;
            published.push(seq);
            last = seq;
        }
        self.commit(stream, &plan, new, last, &published).await?;
        let old = {
            let state = self.lock();
            state.mirror.all_garbage(plan.epoch)
        };
        if let Err(error) = self.erase_all(&old).await {
            tracing::warn!(
                %error,
                "rotated the master key, but some copies wrapped under the old key are not erased yet; the next opening with the new key erases them"
            );
        }
        tracing::info!(
            rewrapped,
            new_master_key = %new.fingerprint(),
            "rotated the key stream's master key; reopen it with the new key from now on"
        );
        Ok(rewrapped)
    }

    /// Publishes the new meta record: the commit point. From then on the new master key is in
    /// force, for this handle too.
    async fn commit(
        &self,
        stream: &KeyStream,
        plan: &Plan,
        new: &MasterKey,
        last: u64,
        published: &[u64],
    ) -> Result<(), KeyError> {
        let answer = stream
            .publish(
                META.to_owned(),
                plan.meta.clone(),
                last,
                Some(plan.old_meta_seq),
            )
            .await;
        match answer {
            Ok(Published::At(seq)) => {
                self.use_master(new);
                self.applied_own(seq, META, &plan.meta).await
            }
            Ok(Published::Conflict) => Err(self.abort(stream, published, conflict(stream)).await),
            Err(error) => {
                // The meta record may have been stored without its ack reaching us: the new
                // versions must stay until the stream says which master key is in force.
                if self.catch_up().await.is_err() {
                    return Err(KeyError::Io {
                        path: stream_path(stream.name()),
                        source: std::io::Error::other(format!(
                            "the master key rotation may or may not have taken effect ({error}); once NATS answers, open the key store with the new key, and if it is refused as the wrong key, the old one is still in force"
                        )),
                    });
                }
                let committed = self
                    .lock()
                    .mirror
                    .meta()
                    .is_some_and(|meta| meta.record.epoch == plan.epoch);
                if committed {
                    self.use_master(new);
                    Ok(())
                } else {
                    Err(self.abort(stream, published, error).await)
                }
            }
        }
    }

    fn use_master(&self, new: &MasterKey) {
        let mut state = self.lock();
        state.master = Some(new.clone());
        state.master_check = Some(new.check_value());
    }

    /// Every live key rewrapped under `new` in a fresh epoch, and the new meta record.
    pub(super) fn plan_rotation(&self, new: &MasterKey) -> Result<Plan, KeyError> {
        let state = self.lock();
        let old = state.writable()?;
        let secrets = state.secrets()?;
        let meta = state
            .mirror
            .meta()
            .ok_or_else(|| KeyError::corrupt("the key stream holds no meta record"))?;
        let epoch = new_epoch(meta.record.epoch);
        let mut rewraps = Vec::with_capacity(state.mirror.live_count());
        for (id, loop_id, versions) in state.mirror.live_keys() {
            let version = versions.in_epoch(meta.record.epoch).ok_or_else(|| {
                KeyError::corrupt(format!(
                    "live key {id} has no version wrapped under the master key in force"
                ))
            })?;
            let key = unwrap_data_key(&old, loop_id, id, &version.wrapped).map_err(|_| {
                KeyError::corrupt(format!(
                    "key {id} does not unwrap under the master key in force"
                ))
            })?;
            let record = Record::Key(KeyRecord {
                epoch,
                id,
                wrapped: wrap_data_key(new, loop_id, &key),
                // The old version is erased: the contact it carried moves to the new one.
                digest: version.digest,
            });
            rewraps.push(Rewrap {
                subject: Topic::Key(loop_id.to_owned()).subject(),
                payload: record.encode(),
            });
        }
        let meta_record = Record::Meta(MetaRecord {
            epoch,
            secrets: secrets.wrap(new),
        });
        Ok(Plan {
            epoch,
            rewraps,
            meta: meta_record.encode(),
            old_meta_seq: meta.seq,
            last_in_stream: state.mirror.applied(),
        })
    }

    /// Erases what an unfinished rotation published (best effort: what stays is ignored by
    /// readers and erased by the next rotation) and returns `error`.
    async fn abort(&self, stream: &KeyStream, published: &[u64], error: KeyError) -> KeyError {
        if let Err(cleanup) = self.erase_all(published).await {
            tracing::warn!(
                stream = stream.name(),
                %cleanup,
                "could not erase the new key versions of an unfinished rotation; the next rotation erases them"
            );
        }
        error
    }
}

/// The error for a rotation another writer interrupted.
fn conflict(stream: &KeyStream) -> KeyError {
    KeyError::Io {
        path: stream_path(stream.name()),
        source: std::io::Error::other(
            "another process wrote to the key stream during the master key rotation, which stopped with the old master key still in force; stop every other Closeloop process using the key store and run the rotation again",
        ),
    }
}
