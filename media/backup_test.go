package media

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestCheckpoint: a checkpoint of a service with stored media opens as a
// service of its own that serves the same media, URLs signed before the
// checkpoint included; the service counts the transfers and bytes.
func TestCheckpoint(t *testing.T) {
	e := newEnv(t, "fs", nil)
	data, other := randomBytes(11, 200<<10), randomBytes(12, 5000)
	id := e.upload(data)
	e.upload(other)
	u := e.mustDownloadURL(id)
	if got := e.download(id); !bytes.Equal(got, data) {
		t.Fatal("download before the checkpoint")
	}
	st := e.svc.Stats()
	if st.Uploads != 2 || st.Downloads != 1 || st.BytesIn != uint64(len(data)+len(other)) || st.BytesOut != uint64(len(data)) {
		t.Errorf("stats: %d uploads, %d downloads, %d bytes in, %d out; want 2, 1, %d, %d",
			st.Uploads, st.Downloads, st.BytesIn, st.BytesOut, len(data)+len(other), len(data))
	}

	dir := filepath.Join(t.TempDir(), "copy")
	cst, err := e.svc.Checkpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cst.Blobs != 2 || cst.Bytes != int64(len(data)+len(other)) {
		t.Errorf("checkpoint copied %d blobs, %d bytes; want 2, %d", cst.Blobs, cst.Bytes, len(data)+len(other))
	}
	if _, err := e.svc.Checkpoint(dir); err == nil {
		t.Error("a second checkpoint into the same directory succeeded")
	}

	// The copy, opened as the service behind the same endpoint.
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}
	e.cfg.Dir = dir
	e.svc, err = Open(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc.Start()
	e.srv.Config.Handler = e.svc.Handler()
	if r := e.get(u.Url, nil); r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("a URL signed before the checkpoint, served from the copy: %d", r.status)
	}
	if c := e.counts(); c.Ready != 2 {
		t.Errorf("the copy holds %v, want 2 ready", c)
	}
}
