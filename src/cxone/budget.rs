//! stub (replaced by the cxone branch)
#[derive(Debug)]
pub struct Budget;
impl Budget {
    pub fn per_minute(_n: u32) -> Self {
        Budget
    }
    pub fn unlimited() -> Self {
        Budget
    }
    pub async fn acquire(&self) {}
}
