package media

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// waitTransfers waits until cond holds for the service's transfers; it
// wakes on every change of them, and fails the test after 10 s.
func (e *env) waitTransfers(what string, cond func(transferCounts) bool) transferCounts {
	e.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c, changed := e.svc.xfer.snapshot()
		if cond(c) {
			return c
		}
		select {
		case <-changed:
		case <-deadline.C:
			e.t.Fatalf("transfers: %s: still %+v", what, c)
		}
	}
}

// putResult is how a PUT ended.
type putResult struct {
	res response
	err error
}

// trickler is a PUT that sent its first bytes and then nothing more: an
// attacker holding a transfer slot. Closing pw ends its body.
type trickler struct {
	pw   *io.PipeWriter
	done chan putResult
}

// trickle starts a PUT to url that sends the first n bytes of data and
// then stalls, chunked so the bytes leave the client at once. It returns
// the trickler once the server streams the body (it was admitted), or the
// answer when the server refused it without reading.
func (e *env) trickle(url string, data []byte, n int) (*trickler, *putResult) {
	e.t.Helper()
	before, _ := e.svc.xfer.snapshot()
	pr, pw := io.Pipe()
	e.t.Cleanup(func() { pw.CloseWithError(errCutTest) })
	tr := &trickler{pw: pw, done: make(chan putResult, 1)}
	go func() { _, _ = pw.Write(data[:n]) }()
	req, err := http.NewRequest(http.MethodPut, url, pr)
	if err != nil {
		e.t.Fatal(err)
	}
	req.ContentLength = -1 // chunked: every chunk is flushed
	go func() {
		res, err := e.http.Do(req)
		if err != nil {
			tr.done <- putResult{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		tr.done <- putResult{res: response{status: res.StatusCode, header: res.Header, body: b}}
	}()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c, changed := e.svc.xfer.snapshot()
		if c.Streaming > before.Streaming {
			return tr, nil
		}
		select {
		case r := <-tr.done:
			return nil, &r
		case <-changed:
		case <-deadline.C:
			e.t.Fatalf("trickle: neither streamed nor answered: %+v", c)
		}
	}
}

// result waits for the trickler's PUT to end.
func (tr *trickler) result(t *testing.T) putResult {
	t.Helper()
	select {
	case r := <-tr.done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("PUT never ended")
	}
	return putResult{}
}

// offset asks HEAD how many bytes of the upload at url the server holds.
func (e *env) offset(url string) int {
	e.t.Helper()
	r := e.do(http.MethodHead, url, nil, 0, nil)
	off, err := strconv.Atoi(r.header.Get(headerUploadOffset))
	if r.status != 200 || err != nil {
		e.t.Fatalf("HEAD: %d %v", r.status, r.header)
	}
	return off
}

// finish sends the rest of data from the server's offset.
func (e *env) finish(url string, data []byte) {
	e.t.Helper()
	off := e.offset(url)
	r := e.put(url, data[off:], map[string]string{"Content-Range": "bytes " + strconv.Itoa(off) + "-" + strconv.Itoa(len(data)-1) + "/" + strconv.Itoa(len(data))})
	if r.status != 200 {
		e.t.Fatalf("PUT from %d: %d %v %s", off, r.status, r.code(), r.body)
	}
}

// TestTrickleAttack: attackers hold upload slots by trickling bytes. One
// user gets at most MaxUserTransfers slots, and the reserved share stays
// for users with none, so a bystander uploads and downloads at once while
// the attack holds; then the watchdog cuts every trickle below the
// minimum rate, and each cut upload resumes from its offset ([S-14-18],
// [S-14-19]).
func TestTrickleAttack(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		e := newEnv(t, kind, func(c *Config) {
			c.MaxTransfers, c.MaxUserTransfers, c.ReservedTransfers = 12, 3, 3
			c.IdleTimeout = time.Hour // only the rate cuts here
		})
		type held struct {
			tr   *trickler
			url  string
			data []byte
		}
		var holding []held
		refused := map[int]int{} // by status
		for i, attacker := range []uint64{100, 101, 102, 103} {
			for j := range 5 {
				data := randomBytes(uint64(1000+10*i+j), 64<<10)
				s := e.mustSlotAs(attacker, data)
				tr, r := e.trickle(s.Url, data, 100)
				if r != nil {
					if r.err != nil || r.res.header.Get("Retry-After") == "" {
						t.Fatalf("attacker %d PUT %d: %+v", attacker, j, r)
					}
					refused[r.res.status]++
					continue
				}
				holding = append(holding, held{tr, s.Url, data})
			}
		}

		// The bystander, while every attacker still trickles.
		data := randomBytes(7, 1<<20)
		id := e.uploadAs(200, data)
		u := e.mustDownloadURLAs(201, id)
		if r := e.get(u.Url, nil); r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("bystander GET: %d %v", r.status, r.code())
		}

		// Three each for the first three; the fourth gets one slot of the
		// reserved share, and no second.
		c, _ := e.svc.xfer.snapshot()
		if len(holding) != 10 || refused[http.StatusTooManyRequests] != 10 || c.InUse != 10 || c.Users[100] != 3 || c.Users[102] != 3 || c.Users[103] != 1 {
			t.Fatalf("holding %d, refused %v, transfers %+v", len(holding), refused, c)
		}
		if st := e.svc.Stats(); st.Refused["user_transfers"] != 6 || st.Refused["reserved_share"] != 4 || st.Transfers != 10 {
			t.Fatalf("stats %+v", st)
		}

		// Nothing is cut before a whole window has passed.
		e.clock.advance(29 * time.Second)
		e.svc.checkTransfers()
		if st := e.svc.Stats(); st.SlowUploadsCut != 0 {
			t.Fatalf("cut early: %+v", st)
		}
		// 100 bytes in 30 s is below 1 KiB/s: every trickle is cut.
		e.clock.advance(time.Second)
		e.svc.checkTransfers()
		e.waitTransfers("trickles cut", func(c transferCounts) bool { return c.InUse == 0 })
		if st := e.svc.Stats(); st.SlowUploadsCut != 10 || st.SlowDownloadsCut != 0 {
			t.Fatalf("stats %+v", st)
		}
		for _, h := range holding {
			if r := h.tr.result(t); r.err == nil && r.res.status != http.StatusRequestTimeout {
				t.Fatalf("cut PUT answered %d", r.res.status)
			}
			if off := e.offset(h.url); off < 1 || off > 100 {
				t.Fatalf("offset %d after 100 bytes", off)
			}
			e.finish(h.url, h.data)
		}
		if c := e.counts(); c.Ready != 11 || c.Pending != 10 || c.Partials != 0 {
			t.Fatalf("counts %v", c) // the 10 refused slots stay pending, with no bytes
		}
	})
}

// TestSlowDownloadCut: a download whose reader stalls is cut by the
// watchdog and continues with a Range ([S-14-19]).
func TestSlowDownloadCut(t *testing.T) {
	e := newEnv(t, "fs", func(c *Config) {
		c.IdleTimeout = time.Hour
		// More than the media per window: any download still running when
		// a window ends is too slow, whatever the socket buffers took.
		c.MinTransferRate = 4 << 20
	})
	data := randomBytes(11, 32<<20) // more than loopback's socket buffers hold
	id := e.upload(data)
	u := e.mustDownloadURL(id)
	res, err := e.http.Get(u.Url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	e.waitTransfers("download streams", func(c transferCounts) bool { return c.Streaming == 1 })
	e.clock.advance(30 * time.Second)
	e.svc.checkTransfers()
	e.waitTransfers("download cut", func(c transferCounts) bool { return c.InUse == 0 })
	if st := e.svc.Stats(); st.SlowDownloadsCut != 1 || st.SlowUploadsCut != 0 {
		t.Fatalf("stats %+v", st)
	}
	got, err := io.ReadAll(res.Body)
	if err == nil || len(got) >= len(data) {
		t.Fatalf("cut download: %d bytes, %v", len(got), err)
	}
	rest := e.get(u.Url, map[string]string{"Range": "bytes=" + strconv.Itoa(len(got)) + "-"})
	if rest.status != 206 || !bytes.Equal(append(got, rest.body...), data) {
		t.Fatalf("resumed download: %d, %d+%d bytes", rest.status, len(got), len(rest.body))
	}
}

// TestTransferAdmission: the per-user bound and the reserved share
// ([S-14-14], [S-14-18]).
func TestTransferAdmission(t *testing.T) {
	x := newTransfers(&Config{MaxTransfers: 6, MaxUserTransfers: 3, ReservedTransfers: 2})
	acquire := func(user uint64, want refusal) *transfer {
		t.Helper()
		tr, why := x.acquire(user, false, func() {})
		if why != want {
			t.Fatalf("user %d: %v, want %v", user, why, want)
		}
		return tr
	}
	held := []*transfer{acquire(1, admitted), acquire(1, admitted), acquire(1, admitted)}
	acquire(1, refuseUser)
	b1 := acquire(2, admitted) // 4 in use, 2 free: the reserve
	acquire(2, refuseReserved)
	acquire(1, refuseUser)
	c1 := acquire(3, admitted)                // a user with none may take the reserve
	held = append(held, acquire(4, admitted)) // the last slot
	acquire(5, refuseFull)
	x.release(c1)
	acquire(2, refuseReserved) // one free, and user 2 holds one
	x.release(held[0])
	x.release(b1)
	held[0] = acquire(2, admitted) // three free now, user 2 holds none
	acquire(2, refuseReserved)
	held = append(held, acquire(5, admitted))

	closed := make(chan struct{})
	go func() { x.close(); close(closed) }()
	for _, tr := range held {
		select {
		case <-closed:
			t.Fatal("close returned with transfers in progress")
		default:
		}
		x.release(tr)
	}
	<-closed
	acquire(6, refuseFull) // closed
}

// TestRateWatchdog: which transfers the watchdog cuts ([S-14-19]).
func TestRateWatchdog(t *testing.T) {
	x := newTransfers(&Config{MaxTransfers: 10, MaxUserTransfers: 10, MinTransferRate: 1024, RateWindow: 30 * time.Second})
	t0 := time.Unix(1_800_000_000, 0)
	cancelled := map[string]bool{}
	start := func(name string, stream bool, moved int) *transfer {
		tr, why := x.acquire(1, name == "slow upload", func() { cancelled[name] = true })
		if why != admitted {
			t.Fatal(why)
		}
		if stream {
			x.stream(tr, true, t0)
		}
		tr.progress(moved)
		return tr
	}
	fast := start("fast", true, 40<<10)
	slow := start("slow upload", true, 100)
	start("not streaming", false, 0) // hashing or committing: no rate applies
	gone := start("gone", true, 0)
	x.release(gone) // ended before the check: its connection is not touched

	if up, down := x.check(t0.Add(29 * time.Second)); up+down != 0 || len(cancelled) != 0 {
		t.Fatalf("cut before a window ended: %v", cancelled)
	}
	if up, down := x.check(t0.Add(30 * time.Second)); up != 1 || down != 0 || !cancelled["slow upload"] || len(cancelled) != 1 || !slow.wasCut() {
		t.Fatalf("first window: %d %d %v", up, down, cancelled)
	}
	if slow.arm(func(time.Time) error { t.Fatal("deadline moved after the cut"); return nil }, t0) {
		t.Fatal("arm after the cut")
	}
	// The fast transfer starts a new window, in which it moves too little.
	fast.progress(10 << 10)
	if _, down := x.check(t0.Add(59 * time.Second)); down != 0 {
		t.Fatal("cut inside its second window")
	}
	if _, down := x.check(t0.Add(60 * time.Second)); down != 1 || !cancelled["fast"] {
		t.Fatalf("second window: %v", cancelled)
	}
	// No minimum: nothing is ever cut.
	none := newTransfers(&Config{MaxTransfers: 1, MaxUserTransfers: 1, MinTransferRate: -1, RateWindow: time.Second})
	tr, _ := none.acquire(1, false, func() { t.Fatal("cut with no minimum") })
	none.stream(tr, true, t0)
	none.check(t0.Add(time.Hour))
}

// TestStagingQuota: the unfinished uploads of one user hold at most
// StagingQuota bytes; a slot or PUT over it is refused with
// MEDIA_QUOTA_EXCEEDED and nothing is lost; another user is unaffected;
// the count survives a restart ([S-14-20]).
func TestStagingQuota(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		const kib = 1 << 10
		e := newEnv(t, kind, func(c *Config) { c.StagingQuota = 100 * kib })
		quota := func(a answer, what string) {
			t.Helper()
			if a.code() != codeQuotaExceeded || a.err.RetryAfterMs != 0 {
				t.Fatalf("%s: code %v, slot %v, want MEDIA_QUOTA_EXCEEDED", what, a.code(), a.slot)
			}
		}
		staged := func(want int64) {
			t.Helper()
			if got := e.svc.Stats().StagedBytes; got != want {
				t.Fatalf("staged %d bytes, want %d", got, want)
			}
		}

		// Up to 30 KiB of a 60 KiB upload arrive, then the client gives up.
		a := randomBytes(21, 60*kib)
		sa := e.mustSlotAs(1, a)
		tr, r := e.trickle(sa.Url, a, 30*kib)
		if r != nil {
			t.Fatalf("PUT refused: %+v", r)
		}
		tr.pw.CloseWithError(errCutTest)
		tr.result(t)
		e.waitTransfers("cut PUT ends", func(c transferCounts) bool { return c.InUse == 0 })
		held := e.offset(sa.Url)
		if held == 0 || held > 30*kib {
			t.Fatalf("held %d", held)
		}
		staged(int64(held))

		// 30 + 80 > 100: refused; another user's 80 KiB is not.
		b := randomBytes(22, 80*kib)
		quota(e.slotAs(1, b), "slot over the quota")
		e.uploadAs(2, b)
		// 30 + 70 fits, and so does a second 70 KiB slot: a slot holds
		// nothing until its PUT starts.
		c, d := randomBytes(23, 70*kib-held), randomBytes(24, 70*kib-held)
		sc, sd := e.mustSlotAs(1, c), e.mustSlotAs(1, d)
		tr, r = e.trickle(sc.Url, c, 100)
		if r != nil {
			t.Fatalf("PUT refused: %+v", r)
		}
		staged(int64(held + len(c)))
		// While c's PUT runs it counts whole: d's PUT is refused before
		// its body is read, and keeps its slot.
		r2 := e.put(sd.Url, d, nil)
		if r2.status != http.StatusInsufficientStorage || r2.code() != codeQuotaExceeded || r2.header.Get(headerUploadOffset) != "0" {
			t.Fatalf("PUT over the quota: %d %v %v", r2.status, r2.code(), r2.header)
		}
		tr.pw.CloseWithError(errCutTest)
		tr.result(t)
		e.waitTransfers("trickle ends", func(c transferCounts) bool { return c.InUse == 0 })
		e.finish(sc.Url, c)
		staged(int64(held))
		if r := e.put(sd.Url, d, nil); r.status != 200 {
			t.Fatalf("PUT after the other completed: %d %v", r.status, r.code())
		}
		if st := e.svc.Stats(); st.Refused["staging_quota"] != 2 {
			t.Fatalf("stats %+v", st)
		}

		// The uploader and its bytes are counted again after a restart.
		e.restart()
		staged(int64(held))
		quota(e.slotAs(1, randomBytes(26, 80*kib)), "slot over the quota after a restart")
		e.finish(sa.Url, a)
		staged(0)
		e.mustSlotAs(1, randomBytes(25, 100*kib))
	})
}

// TestFreeSpaceReserve: below MinFreeBytes of free space new uploads are
// refused with MEDIA_STORAGE_FULL, counting what PUTs in progress have
// yet to write, while downloads and deduplicated uploads go on; uploads
// resume when space returns ([S-14-21]).
func TestFreeSpaceReserve(t *testing.T) {
	forEachStore(t, func(t *testing.T, kind storeKind) {
		const mib = 1 << 20
		e := newEnv(t, kind, func(c *Config) { c.MinFreeBytes = mib })
		full := func(a answer, what string) {
			t.Helper()
			if a.code() != codeStorageFull || a.err.RetryAfterMs != 60000 {
				t.Fatalf("%s: code %v (%v), slot %v, want MEDIA_STORAGE_FULL", what, a.code(), a.err, a.slot)
			}
		}
		setFree := func(n int64) {
			e.free.Store(n)
			e.clock.advance(time.Second) // the figure is read at most once a second
		}
		setFree(10 * mib)
		x := randomBytes(31, 100<<10)
		xid := e.upload(x)
		y := randomBytes(32, 2*mib)
		sy := e.mustSlot(y)

		setFree(2 * mib)
		full(e.slot(randomBytes(33, 2*mib)), "slot below the reserve")
		r := e.put(sy.Url, y, nil)
		if r.status != http.StatusInsufficientStorage || r.code() != codeStorageFull || r.header.Get("Retry-After") != "60" || r.header.Get(headerUploadOffset) != "0" {
			t.Fatalf("PUT below the reserve: %d %v %v", r.status, r.code(), r.header)
		}
		if !bytes.Equal(e.download(xid), x) {
			t.Fatal("download differs")
		}
		if s := e.mustSlot(x); !s.Stored {
			t.Fatalf("slot for stored bytes: %+v", s)
		}
		small := randomBytes(34, 512<<10)
		ss := e.mustSlot(small) // 2 MiB - 0.5 MiB still leaves the reserve

		// A PUT in progress holds its room: 3 - 1 - 1.5 < 1.
		setFree(3 * mib)
		w := randomBytes(35, mib)
		sw := e.mustSlot(w)
		tr, res := e.trickle(sw.Url, w, 100)
		if res != nil {
			t.Fatalf("PUT refused: %+v", res)
		}
		mid := randomBytes(36, 3*mib/2)
		full(e.slot(mid), "slot while a PUT holds room")
		tr.pw.CloseWithError(errCutTest)
		tr.result(t)
		e.waitTransfers("trickle ends", func(c transferCounts) bool { return c.InUse == 0 })
		e.mustSlot(mid)

		// The figure is cached for a second.
		e.free.Store(0)
		e.mustSlot(randomBytes(37, 10))
		e.clock.advance(time.Second)
		full(e.slot(randomBytes(37, 10)), "slot with no space")

		// Space returns: the refused PUTs go through.
		setFree(10 * mib)
		if r := e.put(sy.Url, y, nil); r.status != 200 {
			t.Fatalf("PUT after space returned: %d %v", r.status, r.code())
		}
		e.finish(ss.Url, small)
		if st := e.svc.Stats(); st.Refused["disk_reserve"] != 4 || st.FreeBytes != 10*mib {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestRecordFormat: a media record round-trips with its owner, and one
// written before the owner field decodes with owner 0.
func TestRecordFormat(t *testing.T) {
	r := record{state: statePending, typ: pb.ContentType_CONTENT_VIDEO, size: 300, hash: Hash{1, 2, 3}, created: 1000, touched: 2000, owner: 4101}
	b := r.encode()
	want := append([]byte{1, 1, 2, 0xac, 0x02, 1, 2, 3}, make([]byte, 29)...)
	want = append(want, 0xe8, 0x07, 0xd0, 0x0f, 0x85, 0x20)
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded % x\nwant    % x", b, want)
	}
	if got, err := decodeRecord(b); err != nil || got != r {
		t.Fatalf("decoded %+v %v", got, err)
	}
	old := b[:len(b)-2]
	r.owner = 0
	if got, err := decodeRecord(old); err != nil || got != r {
		t.Fatalf("old record decoded %+v %v", got, err)
	}
	if _, err := decodeRecord(b[:len(b)-1]); err == nil {
		t.Fatal("truncated owner decoded")
	}
}
