//! The readers of SPEC 5.1: the live (finalized) models only.

use std::collections::{BTreeMap, HashMap};

use super::fqid::{is_valid_collection, Fqid};
use super::model::Model;
use super::writer::{Datastore, DatastoreError};

impl Datastore {
    /// The live model `fqid`; `None` if it never existed or is deleted.
    pub async fn get(&self, fqid: &Fqid) -> Result<Option<Model>, DatastoreError> {
        let mut conn = self.conn.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.keys.models(fqid.collection()))
            .arg(fqid.id())
            .query_async(&mut conn)
            .await?;
        match text {
            None => Ok(None),
            Some(text) => {
                let model = Model::from_stored_json(&text).map_err(DatastoreError::Corrupt)?;
                Ok((!model.deleted).then_some(model))
            }
        }
    }

    /// The live models of `collection`, by id.
    pub async fn get_all(&self, collection: &str) -> Result<BTreeMap<u64, Model>, DatastoreError> {
        if !is_valid_collection(collection) {
            return Ok(BTreeMap::new());
        }
        let mut conn = self.conn.clone();
        let all: HashMap<u64, String> = redis::cmd("HGETALL")
            .arg(self.keys.models(collection))
            .query_async(&mut conn)
            .await?;
        let mut models = BTreeMap::new();
        for (id, text) in all {
            let model = Model::from_stored_json(&text).map_err(DatastoreError::Corrupt)?;
            if !model.deleted {
                models.insert(id, model);
            }
        }
        Ok(models)
    }
}
