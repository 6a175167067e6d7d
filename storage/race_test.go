//go:build race

package storage_test

// raceBuild: the race detector slows the simulation about tenfold, so a
// race build runs fewer seeds by default (see defaultSimSeeds).
const raceBuild = true
