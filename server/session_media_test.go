package server_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/media"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// mediaHTTP returns an HTTP client that trusts n's certificate by its
// fingerprint, as a client does ([S-14-8]).
func mediaHTTP(t *testing.T, n *nodetest.Node) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: wiretest.TLSConfig(n.Fingerprint())}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// nextOf returns the next frame of kind k (skipping inbox traffic).
func nextOf(t *testing.T, c *wiretest.Client, k protocol.Kind) codec.Frame {
	t.Helper()
	for {
		f, err := c.Next(wiretest.Timeout)
		if err != nil {
			t.Fatalf("waiting for %v: %v", k, err)
		}
		if f.Kind == k || f.Kind == protocol.KindError {
			return f
		}
	}
}

// TestMediaEndToEnd: a logged-in client gets a slot over the chat
// connection, uploads over HTTPS with the chat certificate, and another
// user downloads the same bytes ([S-14-3], [S-14-4], [S-14-7]).
func TestMediaEndToEnd(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	ca, _ := n.Login(t, alice, 0)
	cb, _ := n.Login(t, bob, 0)
	hc := mediaHTTP(t, n)

	data := bytes.Repeat([]byte("parley media "), 40000)
	sum := sha256.Sum256(data)
	ca.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: 3, Type: pb.ContentType_CONTENT_IMAGE, Size: uint64(len(data)), Sha256: sum[:]})
	f := nextOf(t, ca, protocol.KindMediaUploadSlot)
	var slot pb.MediaUploadSlot
	if f.Kind != protocol.KindMediaUploadSlot || codec.ParseProto(f.Body, &slot) != nil || slot.Rid != 3 || slot.Url == "" {
		t.Fatalf("slot: %v %x", f.Kind, f.Body)
	}
	req, _ := http.NewRequest(http.MethodPut, slot.Url, bytes.NewReader(data))
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("PUT: %s", res.Status)
	}

	cb.Send(protocol.KindMediaDownload, &pb.MediaDownload{Rid: 4, Id: slot.Id})
	f = nextOf(t, cb, protocol.KindMediaDownloadURL)
	var u pb.MediaDownloadUrl
	if f.Kind != protocol.KindMediaDownloadURL || codec.ParseProto(f.Body, &u) != nil || u.Rid != 4 || u.Size != uint64(len(data)) {
		t.Fatalf("download URL: %v %x", f.Kind, f.Body)
	}
	res, err = hc.Get(u.Url)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("GET: %s, %d bytes", res.Status, len(got))
	}

	// The same bytes again: stored, no upload ([S-14-5]).
	cb.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: 5, Type: pb.ContentType_CONTENT_IMAGE, Size: uint64(len(data)), Sha256: sum[:]})
	f = nextOf(t, cb, protocol.KindMediaUploadSlot)
	slot.Reset()
	if codec.ParseProto(f.Body, &slot) != nil || !slot.Stored || slot.Url != "" {
		t.Fatalf("dedupe slot: %v %x", f.Kind, f.Body)
	}
	// A refusal names the rid and keeps the connection.
	cb.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: 6, Type: pb.ContentType_CONTENT_VOICE, Size: protocol.MaxMediaVoice + 1, Sha256: sum[:]})
	f = nextOf(t, cb, protocol.KindError)
	var e pb.Error
	if codec.ParseProto(f.Body, &e) != nil || e.Code != protocol.CodeMediaTooLarge || e.Rid != 6 {
		t.Fatalf("oversize: %v", &e)
	}
	cb.Send(protocol.KindPing, &pb.Ping{})
	nextOf(t, cb, protocol.KindPong)
}

// TestMediaUnauthenticated: a slot request before Login is refused with
// UNAUTHENTICATED and a close, and nothing is stored ([S-14-3]).
func TestMediaUnauthenticated(t *testing.T) {
	n := nodetest.Start(t, nil)
	c := n.Dial(t)
	sum := sha256.Sum256([]byte("x"))
	c.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: 1, Type: pb.ContentType_CONTENT_IMAGE, Size: 1, Sha256: sum[:]})
	f, err := c.Next(wiretest.Timeout)
	var e pb.Error
	if err != nil || f.Kind != protocol.KindError || codec.ParseProto(f.Body, &e) != nil || e.Code != protocol.CodeUnauthenticated {
		t.Fatalf("got %v %x %v", f.Kind, f.Body, err)
	}
	if _, err := c.Next(2 * time.Second); err == nil {
		t.Fatalf("connection not closed: %v", err)
	}
	counts, err := n.Media().Counts()
	if err != nil || counts != (media.Counts{}) {
		t.Fatalf("left behind: %+v %v", counts, err)
	}
}

// TestMediaUnavailable: a node without media answers MEDIA_UNAVAILABLE.
func TestMediaUnavailable(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.MediaAddr = "off" })
	u := n.Register(t, n.Phone())
	c, _ := n.Login(t, u, 0)
	c.Send(protocol.KindMediaDownload, &pb.MediaDownload{Rid: 9, Id: make([]byte, 16)})
	f := nextOf(t, c, protocol.KindError)
	var e pb.Error
	if codec.ParseProto(f.Body, &e) != nil || e.Code != protocol.CodeMediaUnavailable || e.Rid != 9 {
		t.Fatalf("%v", &e)
	}
}
