package node_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/parley-im/parley/analytics"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/internal/wiretest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestAnalyticsFileSink: with the embedded default sink, a node writes
// the metadata events of two users on two shards to
// DATA/analytics/events.ndjson — registrations, logins, the message
// accepted, delivered and read, the group created, the media uploaded —
// and nothing in the file is a phone number or a message body.
func TestAnalyticsFileSink(t *testing.T) {
	n := nodetest.Start(t, nil)
	alice, bob := n.RegisterOn(t, 0), n.RegisterOn(t, 1)
	a, _ := n.Login(t, alice, 0)
	b, _ := n.Login(t, bob, 0)
	const body = "a body the analytics stream never holds"
	id := a.SendText(bob.ID, 1, body)
	m := b.Message()
	b.Ack(m.Seq)
	b.Send(protocol.KindRead, &pb.Read{Rid: 7, Peer: alice.ID, UpTo: id})
	b.Expect(protocol.KindOK, protocol.KindMessage)
	a.Send(protocol.KindGroupCreate, &pb.GroupCreate{Rid: 8, Name: "metrics", Members: []uint64{bob.ID}})
	info := &pb.GroupInfo{}
	// Alice's SYNCED comes from her shard, her SENT from Bob's: it may
	// arrive after the SENT.
	a.ExpectProto(protocol.KindGroupInfo, info, protocol.KindReceipt, protocol.KindMessage, protocol.KindGroupEvent, protocol.KindSynced)
	const media = "media bytes"
	upload(t, n, a, media)
	n.Restart(t) // the shutdown writes what the pipeline holds

	raw, err := os.ReadFile(filepath.Join(n.DataDir(), "analytics", "events.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{alice.Phone, bob.Phone, body, "metrics"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatalf("the analytics file holds %q", secret)
		}
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var e analytics.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		key := e.Type + "/" + strconv.FormatUint(e.User, 10)
		seen[key] = true
		if e.Type == analytics.TypeMessageAccepted && e.ID == id && (e.Peer != bob.ID || e.Size != int64(len(body))) {
			t.Fatalf("message_accepted %+v, want to %d, %d bytes", e, bob.ID, len(body))
		}
		if e.Type == analytics.TypeGroupCreated && e.Group != info.Group {
			t.Fatalf("group_created %+v, want group %d", e, info.Group)
		}
		if e.Type == analytics.TypeMediaUploaded && e.Size != int64(len(media)) {
			t.Fatalf("media_uploaded %+v, want %d bytes", e, len(media))
		}
	}
	for _, want := range []struct {
		typ  string
		user uint64
	}{
		{analytics.TypeRegistered, alice.ID}, {analytics.TypeRegistered, bob.ID},
		{analytics.TypeLogin, alice.ID}, {analytics.TypeLogin, bob.ID},
		{analytics.TypeMessageAccepted, alice.ID}, {analytics.TypeMessageDelivered, bob.ID},
		{analytics.TypeMessageRead, bob.ID}, {analytics.TypeGroupCreated, alice.ID},
		{analytics.TypeMediaUploaded, alice.ID},
	} {
		if !seen[want.typ+"/"+strconv.FormatUint(want.user, 10)] {
			t.Errorf("no %s event for user %d in:\n%s", want.typ, want.user, raw)
		}
	}
}

// TestAnalyticsOff: with the sink off the node writes no analytics file.
func TestAnalyticsOff(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Analytics.Sink = node.AnalyticsOff })
	alice := n.RegisterOn(t, 0)
	a, _ := n.Login(t, alice, 0)
	a.SendText(alice.ID, 1, "note to self")
	n.Restart(t)
	if _, err := os.Stat(filepath.Join(n.DataDir(), "analytics")); !os.IsNotExist(err) {
		t.Fatalf("analytics off, yet DATA/analytics: %v", err)
	}
}

// upload stores content as media of c's user through the node's media
// endpoint: MEDIA_UPLOAD, then a PUT to the slot's URL.
func upload(t *testing.T, n *nodetest.Node, c *wiretest.Client, content string) {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	c.Send(protocol.KindMediaUpload, &pb.MediaUpload{Rid: c.NextRID(), Type: pb.ContentType_CONTENT_IMAGE, Size: uint64(len(content)), Sha256: sum[:]})
	var slot pb.MediaUploadSlot
	c.ExpectProto(protocol.KindMediaUploadSlot, &slot, protocol.KindReceipt, protocol.KindReceipts, protocol.KindMessage, protocol.KindGroupEvent)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: wiretest.TLSConfig(n.Fingerprint())}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPut, slot.Url, strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s", slot.Url, res.Status)
	}
}
