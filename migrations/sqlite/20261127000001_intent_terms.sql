-- The leader's term an intent was written in (NULL without `[ha]`): once another
-- instance leads in a later term, the writer's calls are over, so its intents are
-- settled within seconds instead of after the wait kept for another process's calls.
ALTER TABLE transition_intents ADD COLUMN term INTEGER;
