//! stub (replaced by the cxone branch)
use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::domain::{AgentState, BreakStatus, Schedule};

#[derive(Debug)]
pub struct V2Client;
impl V2Client {
    pub fn new(_http: reqwest::Client, _settings: ClientSettings, _budget: Arc<Budget>) -> Self {
        V2Client
    }
}
pub fn install_crypto_provider() {}
#[async_trait]
impl ContactCenter for V2Client {
    async fn list_agents(&self, _f: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
        todo!()
    }
    async fn agent_state(&self, _a: &str) -> Result<AgentSnapshot, CxoneError> {
        todo!()
    }
    async fn set_agent_state(
        &self,
        _a: &str,
        _s: AgentState,
        _r: &str,
    ) -> Result<AgentSnapshot, CxoneError> {
        todo!()
    }
    async fn schedule(&self, _a: &str) -> Result<Schedule, CxoneError> {
        todo!()
    }
    async fn break_status(&self, _a: &str) -> Result<BreakStatus, CxoneError> {
        todo!()
    }
    async fn check_access(&self) -> Result<(), CxoneError> {
        todo!()
    }
}
