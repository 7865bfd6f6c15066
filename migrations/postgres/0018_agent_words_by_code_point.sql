-- Words are matched by prefix with range comparisons, which hold only in code-point order: a database
-- whose default collation is linguistic (en_US.UTF-8, say) would order some words elsewhere.
ALTER TABLE agent_words ALTER COLUMN word TYPE TEXT COLLATE "C";
