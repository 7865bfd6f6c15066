-- Refused payments are forgotten once their authorization expired; this finds them.
CREATE INDEX payments_refused ON payments (valid_before) WHERE status = 'failed';
