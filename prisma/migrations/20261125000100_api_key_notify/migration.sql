-- API processes cache API key lookups (apps/api/src/auth/credentials-cache.ts) and drop an
-- entry when its key changes. Every update or delete of a key, by the API or by hand, notifies
-- them on this channel with the key's prefix; NOTIFY is delivered when the transaction commits.
CREATE FUNCTION finetune_api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('finetune_api_keys', OLD.prefix);
  RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
  FOR EACH ROW EXECUTE FUNCTION finetune_api_key_changed();
