"""`python -m regmix.prepare`: tokenize a corpus into shards and a manifest (regmix.data.prepare)."""

from regmix.data.prepare import main

if __name__ == "__main__":
    main()
