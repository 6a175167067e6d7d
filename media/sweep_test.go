package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"github.com/parley-im/parley/protocol/pb"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

const day = 24 * time.Hour

// TestSweep moves the clock and checks that the sweeper deletes exactly
// what has expired ([S-14-16], [S-14-17]).
func TestSweep(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, nil)
		ctx := context.Background()
		sweep := func() SweepStats {
			t.Helper()
			st, err := e.svc.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		data := func(i uint64) []byte { return randomBytes(100+i, 5000+int(i)*50000) }

		// Day 0.
		idA := e.upload(data(0))         // never referenced again
		idB := e.upload(data(1))         // downloaded on day 20
		idC := e.upload(data(2))         // its bytes uploaded again (deduped) on day 29
		idC2 := e.upload(data(2))        // a second id for the same blob: goes with it
		slotD := e.mustSlot(data(3))     // slot, never uploaded
		slotE := e.mustSlot(data(4))     // half uploaded on day 1
		slotF := e.mustSlot(data(5))     // a PUT is writing it when the sweeper comes
		idG := e.upload(data(6))         // being committed again when the sweeper comes
		if !e.mustSlot(data(2)).Stored { // dedupe
			t.Fatal("not deduped")
		}
		if st := sweep(); st != (SweepStats{}) {
			t.Fatalf("day 0 swept %+v", st)
		}

		e.clock.advance(23 * time.Hour) // day 1, before E's URL expires: a PUT to E breaks off
		off := e.cutPut(slotE, data(4), 100_000)

		e.clock.advance(6*day + 13*time.Hour) // day 7.5: a PUT is writing F
		idF, _ := IDFromBytes(slotF.Id)
		if _, _, code := e.svc.claim(idF); code != 0 {
			t.Fatal(code)
		}
		st := sweep()
		if st.Incomplete != 1 || st.Blobs != 0 {
			t.Fatalf("day 7.5 swept %+v, want only D", st)
		}
		e.svc.release(idF)
		if r := e.do(http.MethodHead, e.freshUploadURL(slotD.Id), nil, 0, nil); r.status != 404 || r.code() != codeNotFound {
			t.Fatalf("D after sweep: %d", r.status)
		}
		if r := e.do(http.MethodHead, e.freshUploadURL(slotE.Id), nil, 0, nil); r.status != 200 || r.header.Get(headerUploadOffset) != strconv.Itoa(off) {
			t.Fatalf("E after sweep: %d %v", r.status, r.header)
		}

		e.clock.advance(day) // day 8.5: E idle for 7.5 days, F for 8.5
		if st := sweep(); st.Incomplete != 2 {
			t.Fatalf("day 8.5 swept %+v, want E and F", st)
		}
		if c := e.counts(); c.Partials != 0 || c.Pending != 0 {
			t.Fatalf("left: %v", c)
		}

		e.clock.advance(11*day + 12*time.Hour) // day 20
		e.mustDownloadURL(idB)
		e.clock.advance(9 * day) // day 29
		if !e.mustSlot(data(2)).Stored {
			t.Fatal("C not deduped")
		}

		// Day 31: A and G are stale, but G's bytes are being committed by
		// another upload right now.
		e.clock.advance(2 * day)
		gh := sha256.Sum256(data(6))
		e.svc.mu.Lock()
		e.svc.committing[gh]++
		e.svc.mu.Unlock()
		st = sweep()
		if st.Blobs != 1 || st.Media != 1 {
			t.Fatalf("day 31 swept %+v, want A", st)
		}
		e.svc.mu.Lock()
		delete(e.svc.committing, gh)
		e.svc.mu.Unlock()
		if a := e.downloadURL(idA); a.code() != codeNotFound {
			t.Fatalf("A after sweep: %+v", a)
		}
		for _, id := range [][]byte{idB, idC, idC2, idG} {
			if got := e.download(id); len(got) == 0 {
				t.Fatal("lost")
			}
		}

		// Day 62: the downloads above touched B, C and G on day 31; 31 days
		// later everything is stale and goes, each blob with its ids.
		e.clock.advance(31 * day)
		st = sweep()
		if st.Blobs != 3 || st.Media != 6 {
			t.Fatalf("day 62 swept %+v", st)
		}
		if c := e.counts(); c != (Counts{}) || e.blobs() != 0 {
			t.Fatalf("left: %v, store %d", c, e.blobs())
		}
	})
}

// TestSweepOrphans: staged files and blobs that no record names are
// removed (what a crash between two steps leaves).
func TestSweepOrphans(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, nil)
		keep := randomBytes(1, 1000)
		id := e.upload(keep)
		// An orphan blob: stored, never recorded.
		orphan := randomBytes(2, 1000)
		tmp := e.cfg.Dir + "/orphan"
		if err := os.WriteFile(tmp, orphan, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Store().Put(context.Background(), sha256.Sum256(orphan), tmp, 1000); err != nil {
			t.Fatal(err)
		}
		// An orphan staged file.
		if err := os.WriteFile(e.svc.partialPath(NewID()), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := e.svc.Sweep(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Orphans != 2 || st.Blobs != 0 {
			t.Fatalf("swept %+v", st)
		}
		if e.blobs() != 1 || !bytes.Equal(e.download(id), keep) {
			t.Fatal("kept blob lost")
		}
	})
}

// cutPut sends a PUT of data to the slot that breaks off after n bytes and
// returns the offset the server kept once it has noticed.
func (e *env) cutPut(s *pb.MediaUploadSlot, data []byte, n int) int {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.Url, &cutReader{data: data, n: n})
	req.ContentLength = int64(len(data))
	if res, err := e.http.Do(req); err == nil {
		res.Body.Close()
		e.t.Fatalf("cut PUT succeeded: %d", res.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.do(http.MethodHead, s.Url, nil, 0, nil)
		off, _ := strconv.Atoi(r.header.Get(headerUploadOffset))
		if off > 0 && !e.busy(s.Id) {
			return off
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("offset stays %d", off)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) freshUploadURL(id []byte) string {
	i, _ := IDFromBytes(id)
	u, _ := e.svc.url(opUpload, i, 1, e.clock.Now(), time.Hour)
	return u
}
