package media

import "sync/atomic"

// counters are the service's event counters; each is updated atomically
// where the event happens.
type counters struct {
	refused       [numRefusals]atomic.Uint64
	slowUploads   atomic.Uint64
	slowDownloads atomic.Uint64
	uploads       atomic.Uint64 // PUT bodies read (copyIn)
	downloads     atomic.Uint64 // GET bodies written (copyOut)
	bytesIn       atomic.Uint64 // upload bytes received
	bytesOut      atomic.Uint64 // download bytes sent
}

// Stats is a snapshot of the service's counters and gauges, for metrics.
type Stats struct {
	// Refused counts refusals by reason: "endpoint_full" (503 OVERLOADED),
	// "user_transfers" and "reserved_share" (429
	// MEDIA_TOO_MANY_TRANSFERS), "staging_quota" (MEDIA_QUOTA_EXCEEDED),
	// "disk_reserve" (MEDIA_STORAGE_FULL), "rate_limited" (RATE_LIMITED
	// on the chat connection). Every reason is present.
	Refused map[string]uint64
	// SlowUploadsCut and SlowDownloadsCut count transfers cut for moving
	// slower than Config.MinTransferRate.
	SlowUploadsCut, SlowDownloadsCut uint64
	// Transfers is the number of HTTP requests in progress.
	Transfers int
	// Uploads and Downloads count the transfers that moved a body (PUT
	// and GET; a resumed upload counts once per PUT); BytesIn and
	// BytesOut the body bytes they moved.
	Uploads, Downloads, BytesIn, BytesOut uint64
	// StagedBytes is what the staging quotas count, summed over users:
	// the bytes of unfinished uploads on disk, and for each upload a PUT
	// is writing, its whole size.
	StagedBytes int64
	// FreeBytes is the free space of Dir's file system last read (at most
	// a second old while uploads arrive); 0 before the first read.
	FreeBytes int64
}

// Stats returns a snapshot of the service's counters. It is cheap and
// safe for concurrent use.
func (s *Service) Stats() Stats {
	st := Stats{
		Refused:          make(map[string]uint64, numRefusals-1),
		SlowUploadsCut:   s.stats.slowUploads.Load(),
		SlowDownloadsCut: s.stats.slowDownloads.Load(),
		StagedBytes:      s.stage.total.Load(),
		FreeBytes:        s.disk.lastFree(),
		Uploads:          s.stats.uploads.Load(),
		Downloads:        s.stats.downloads.Load(),
		BytesIn:          s.stats.bytesIn.Load(),
		BytesOut:         s.stats.bytesOut.Load(),
	}
	for r := refuseFull; r < numRefusals; r++ {
		st.Refused[refusalNames[r]] = s.stats.refused[r].Load()
	}
	c, _ := s.xfer.snapshot()
	st.Transfers = c.InUse
	return st
}
