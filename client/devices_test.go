package client

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// TestRequestLink walks a companion through [S-9-12] against the fake
// server: LINK_REQUEST on a fresh connection, the code, then LINKED on the
// same connection with the credentials.
func TestRequestLink(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	pending := background(func() (*PendingLink, error) { return RequestLink(context.Background(), cfg, "iPad Air") })
	fc := srv.accept(t)
	var lr pb.LinkRequest
	fc.expectProto(protocol.KindLinkRequest, &lr)
	if lr.Version != protocol.Version || lr.DeviceName != "iPad Air" || lr.Rid == 0 {
		t.Fatalf("LINK_REQUEST %v", &lr)
	}
	fc.writeProto(protocol.KindPong, &pb.Pong{})
	fc.writeProto(protocol.KindLinkCode, &pb.LinkCode{Rid: lr.Rid, Code: "7KQ2M9XH4TZC8RWB", ExpiresInS: 120})
	l, err := wait(t, pending)
	if err != nil {
		t.Fatal(err)
	}
	if l.Code != "7KQ2M9XH4TZC8RWB" || l.ExpiresIn != 2*time.Minute {
		t.Fatalf("link %+v", l)
	}
	linked := background(func() (Credentials, error) { return l.Wait(context.Background()) })
	secret := bytes.Repeat([]byte{3}, protocol.CredentialLen)
	fc.writeProto(protocol.KindLinked, &pb.Linked{Rid: lr.Rid + 1, User: 1, Device: 1, Credential: secret}) // not ours
	fc.writeProto(protocol.KindLinked, &pb.Linked{Rid: lr.Rid, User: 4101, Device: 3, Credential: secret})
	creds, err := wait(t, linked)
	if err != nil || creds.User != 4101 || creds.Device != 3 || !bytes.Equal(creds.Secret, secret) {
		t.Fatalf("Wait = %+v, %v", creds, err)
	}
	fc.expectClosed()
	if _, err := l.Wait(context.Background()); err == nil {
		t.Error("second Wait succeeded")
	}
}

// TestRequestLinkRefusedAndCancelled: a refusal is a *ServerError; a Wait
// whose context ends returns its error and closes the connection.
func TestRequestLinkRefusedAndCancelled(t *testing.T) {
	srv := newFakeServer(t, false)
	cfg := testConfig(srv)
	if _, err := RequestLink(context.Background(), cfg, string(make([]byte, protocol.MaxDeviceName+1))); !errors.Is(err, ErrInvalid) {
		t.Errorf("long name: %v", err)
	}
	pending := background(func() (*PendingLink, error) { return RequestLink(context.Background(), cfg, "x") })
	fc := srv.accept(t)
	var lr pb.LinkRequest
	fc.expectProto(protocol.KindLinkRequest, &lr)
	fc.write(codec.AppendError(nil, protocol.CodeOverloaded, lr.Rid, 0, "", 100))
	if _, err := wait(t, pending); CodeOf(err) != protocol.CodeOverloaded {
		t.Fatalf("RequestLink: %v, want OVERLOADED", err)
	}

	pending = background(func() (*PendingLink, error) { return RequestLink(context.Background(), cfg, "x") })
	fc = srv.accept(t)
	fc.expectProto(protocol.KindLinkRequest, &lr)
	fc.writeProto(protocol.KindLinkCode, &pb.LinkCode{Rid: lr.Rid, Code: "7KQ2M9XH4TZC8RWB", ExpiresInS: 120})
	l, err := wait(t, pending)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	linked := background(func() (Credentials, error) { return l.Wait(ctx) })
	cancel()
	if _, err := wait(t, linked); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait: %v, want context.Canceled", err)
	}
	fc.expectClosed()
}

// TestDeviceRequests: ApproveLink cleans up what the user typed, Devices
// reads DEVICE_LIST, RevokeDevice is answered OK.
func TestDeviceRequests(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	ctx := context.Background()

	approved := background(func() (struct{}, error) { return struct{}{}, c.ApproveLink(ctx, " 7kq2-m9xh 4tzc-8rwb ") })
	var la pb.LinkApprove
	fc.expectProto(protocol.KindLinkApprove, &la)
	if la.Code != "7KQ2M9XH4TZC8RWB" {
		t.Fatalf("LINK_APPROVE %v", &la)
	}
	fc.write(codec.AppendError(nil, protocol.CodeLinkExpired, la.Rid, 0, "", 0))
	if _, err := wait(t, approved); CodeOf(err) != protocol.CodeLinkExpired {
		t.Fatalf("ApproveLink: %v", err)
	}
	for _, bad := range []string{"", "7KQ2M9XH4TZC8RW", "7KQ2M9XH4TZC8RWI", "7KQ2M9XH4TZC8RWBX"} {
		if err := c.ApproveLink(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ApproveLink(%q): %v", bad, err)
		}
	}

	list := background(func() ([]DeviceInfo, error) { return c.Devices(ctx) })
	var d pb.Devices
	fc.expectProto(protocol.KindDevices, &d)
	fc.writeProto(protocol.KindDeviceList, &pb.DeviceList{Rid: d.Rid, Devices: []*pb.Device{
		{Id: 1, Name: "Pixel 9", CreatedMs: 1795611940112, Primary: true, Online: true},
		{Id: 3, Name: "iPad Air", CreatedMs: 1796322277150},
	}})
	devs, err := wait(t, list)
	if err != nil || len(devs) != 2 || devs[0] != (DeviceInfo{1, "Pixel 9", time.UnixMilli(1795611940112), true, true}) ||
		devs[1].ID != 3 || devs[1].Primary || devs[1].Online {
		t.Fatalf("Devices = %+v, %v", devs, err)
	}

	revoked := background(func() (struct{}, error) { return struct{}{}, c.RevokeDevice(ctx, 3) })
	var rd pb.RevokeDevice
	fc.expectProto(protocol.KindRevokeDevice, &rd)
	if rd.Device != 3 {
		t.Fatalf("REVOKE_DEVICE %v", &rd)
	}
	fc.writeProto(protocol.KindOK, &pb.Ok{Rid: rd.Rid})
	if _, err := wait(t, revoked); err != nil {
		t.Fatal(err)
	}
}

// TestClientIsMediaRequester: the media requests of a Client go over its
// connection, are retried after OVERLOADED and RATE_LIMITED with a new
// rid ([S-11-3]), and their answers convert.
func TestClientIsMediaRequester(t *testing.T) {
	srv := newFakeServer(t, false)
	c, fc := connected(t, srv, nil)
	ctx := context.Background()
	var r MediaRequester = c.Client

	sum := [32]byte{1, 2, 3}
	slot := background(func() (MediaUploadSlot, error) {
		return r.RequestUploadSlot(ctx, MediaUploadRequest{Type: pb.ContentType_CONTENT_IMAGE, Size: 245760, SHA256: sum})
	})
	var up pb.MediaUpload
	fc.expectProto(protocol.KindMediaUpload, &up)
	if up.Type != pb.ContentType_CONTENT_IMAGE || up.Size != 245760 || !bytes.Equal(up.Sha256, sum[:]) || len(up.Resume) != 0 {
		t.Fatalf("MEDIA_UPLOAD %v", &up)
	}
	fc.write(codec.AppendError(nil, protocol.CodeOverloaded, up.Rid, 0, "", 1))
	first := up.Rid
	fc.expectProto(protocol.KindMediaUpload, &up)
	if up.Rid == first || up.Size != 245760 {
		t.Fatalf("retried MEDIA_UPLOAD %v", &up)
	}
	id := MediaID{0x3f, 0x9a}
	fc.writeProto(protocol.KindMediaUploadSlot, &pb.MediaUploadSlot{Rid: up.Rid, Id: id[:], Url: "https://m/u", ExpiresInS: 86400, Offset: 7})
	s, err := wait(t, slot)
	if err != nil || s != (MediaUploadSlot{ID: id, URL: "https://m/u", TTL: 24 * time.Hour, Offset: 7}) {
		t.Fatalf("RequestUploadSlot = %+v, %v", s, err)
	}

	down := background(func() (MediaDownloadURL, error) { return r.RequestDownloadURL(ctx, id) })
	var dl pb.MediaDownload
	fc.expectProto(protocol.KindMediaDownload, &dl)
	if !bytes.Equal(dl.Id, id[:]) {
		t.Fatalf("MEDIA_DOWNLOAD %v", &dl)
	}
	fc.write(codec.AppendError(nil, protocol.CodeRateLimited, dl.Rid, 0, "", 1))
	fc.expectProto(protocol.KindMediaDownload, &dl)
	fc.writeProto(protocol.KindMediaDownloadURL, &pb.MediaDownloadUrl{Rid: dl.Rid, Url: "https://m/d", ExpiresInS: 3600, Size: 245760, Sha256: sum[:], Type: pb.ContentType_CONTENT_IMAGE})
	u, err := wait(t, down)
	if err != nil || u != (MediaDownloadURL{URL: "https://m/d", TTL: time.Hour, Size: 245760, SHA256: sum, Type: pb.ContentType_CONTENT_IMAGE}) {
		t.Fatalf("RequestDownloadURL = %+v, %v", u, err)
	}

	notFound := background(func() (MediaDownloadURL, error) { return r.RequestDownloadURL(ctx, id) })
	fc.expectProto(protocol.KindMediaDownload, &dl)
	fc.write(codec.AppendError(nil, protocol.CodeMediaNotFound, dl.Rid, 0, "", 0))
	if _, err := wait(t, notFound); CodeOf(err) != protocol.CodeMediaNotFound {
		t.Fatalf("RequestDownloadURL: %v, want MEDIA_NOT_FOUND", err)
	}
	if _, err := r.RequestUploadSlot(ctx, MediaUploadRequest{Type: pb.ContentType_CONTENT_TEXT, Size: 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("text as media: %v", err)
	}
}
