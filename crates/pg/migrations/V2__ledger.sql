-- The ledger of applied transactions. The drainer inserts a row in the same
-- database transaction as the transaction's effect, so a replay after a
-- crash or a lost COMMIT reply finds the row and skips the effect.
CREATE TABLE opsbuffer_ledger (
    transaction_id uuid PRIMARY KEY,
    site_name text NOT NULL,
    sequence bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX opsbuffer_ledger_site_sequence_idx ON opsbuffer_ledger (site_name, sequence);

-- Raises an error unless a statement changed exactly the expected number of
-- rows. The drainer wraps updates and deletes with it so a missing record
-- aborts the whole database transaction on the server, without a round trip
-- to check the row count before COMMIT.
CREATE FUNCTION opsbuffer_expect_rows(actual bigint, expected bigint, what text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
BEGIN
    IF actual <> expected THEN
        RAISE EXCEPTION 'opsbuffer: % changed % rows, expected %', what, actual, expected
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN actual;
END;
$$;
