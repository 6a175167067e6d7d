package storage

// SyncWanted reports what the cycles committed so far ask of the syncer:
// whether some cycle waits for a sync (wanted), and whether one of those
// may not wait for Config.LazySync (urgent). Tests that step a shard read
// it to see which commits ask for a sync (on the goroutine that steps
// the shard: lastUrgent is the actor's).
func (s *Shard) SyncWanted() (wanted, urgent bool) {
	synced := s.synced.Load()
	return s.wanted.Load() > synced, s.lastUrgent > synced
}
