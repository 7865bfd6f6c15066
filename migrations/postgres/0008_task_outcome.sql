-- Why a task's deposit ended, decided with its money's fate: released | rejected (the last allowed review
-- refused it) | failed (the vendor gave up) | expired (unanswered before the deposit's expiry). Feedback
-- is tagged with it and the agent view counts it.
ALTER TABLE tasks ADD COLUMN outcome TEXT;
