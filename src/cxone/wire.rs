//! stub (replaced by the cxone branch)
