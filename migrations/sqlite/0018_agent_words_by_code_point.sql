-- Words are matched by prefix with range comparisons, which hold only in code-point order: SQLite
-- compares text that way already (BINARY), so only PostgreSQL's column changes. Kept for numbering.
SELECT 1;
