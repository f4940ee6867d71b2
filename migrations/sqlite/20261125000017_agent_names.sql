-- The agent roster: each agent's name and team as the platform last listed them, for
-- compliance reports (which name people) as well as history analytics (which group by
-- team). It was the analytics team roster; one table now serves both. A row stays when
-- the platform stops listing the agent, so a report over a window the agent worked in
-- still names them; `updated_at` is when the platform last listed the agent.
ALTER TABLE analytics_roster RENAME TO agent_roster;
ALTER TABLE agent_roster ADD COLUMN name TEXT;   -- NULL: never listed with a name
