package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/parley-im/parley/server"
	"github.com/parley-im/parley/storage"
)

// keyFlags are the key directory's budgets (spec.md [S-17-15],
// docs/security.md): the KEYS_FETCHes one account may make, and the
// one-time prekeys one user may take of one device in a day.
type keyFlags struct {
	fetchesPerMinute *int
	preKeysPerDay    *int
}

// addKeyFlags defines the key directory flags on fs, with their defaults
// from PARLEY_KEY_FETCHES_PER_MINUTE and PARLEY_PREKEYS_PER_REQUESTER_PER_DAY.
func addKeyFlags(fs *flag.FlagSet) (*keyFlags, error) {
	fetches, err := envInt(envName("key-fetches-per-minute"), 1200)
	if err != nil {
		return nil, err
	}
	preKeys, err := envInt(envName("prekeys-per-requester-per-day"), 20)
	if err != nil {
		return nil, err
	}
	return &keyFlags{
		fetchesPerMinute: fs.Int("key-fetches-per-minute", fetches,
			"KEYS_FETCH `requests` one account may make per minute, its devices together (a burst of as many; RATE_LIMITED beyond)"),
		preKeysPerDay: fs.Int("prekeys-per-requester-per-day", preKeys,
			"one-time `prekeys` one user may take of one device per UTC day; its further fetches get that device's bundle without one (counted in memory, per shard)"),
	}, nil
}

// apply checks the flags, every problem at once, and sets the budgets in
// the server's and the shards' configs.
func (f *keyFlags) apply(srv *server.Config, st *storage.Config) error {
	var errs []error
	if *f.fetchesPerMinute < 1 {
		errs = append(errs, fmt.Errorf("--key-fetches-per-minute %d: want 1 or more", *f.fetchesPerMinute))
	}
	if *f.preKeysPerDay < 1 {
		errs = append(errs, fmt.Errorf("--prekeys-per-requester-per-day %d: want 1 or more", *f.preKeysPerDay))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	srv.KeyFetchesPerMinute = *f.fetchesPerMinute
	st.PreKeysPerRequester = *f.preKeysPerDay
	return nil
}
