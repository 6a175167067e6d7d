package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// A Client is the MediaRequester of its user's media transfers:
//
//	m := client.Media{Requester: c, HTTP: httpClient}
var _ MediaRequester = (*Client)(nil)

// RequestUploadSlot asks the server for an upload slot (MEDIA_UPLOAD →
// MEDIA_UPLOAD_SLOT, [S-14-3]). Like every request it waits across
// reconnects and is retried after RATE_LIMITED, OVERLOADED and INTERNAL
// with the delay the server names; other refusals (MEDIA_TOO_LARGE,
// MEDIA_NOT_FOUND for a Resume, MEDIA_UNAVAILABLE, INVALID_ARGUMENT) are
// *ServerErrors. A request repeated after a lost connection may leave an
// unused upload behind, which the server deletes after 7 days.
func (c *Client) RequestUploadSlot(ctx context.Context, req MediaUploadRequest) (MediaUploadSlot, error) {
	if limit := protocol.MaxMediaSize(req.Type); limit == 0 || req.Size <= 0 || req.Size > limit {
		return MediaUploadSlot{}, fmt.Errorf("%w: media of type %v and %d bytes", ErrInvalid, req.Type, req.Size)
	}
	m := &pb.MediaUpload{Type: req.Type, Size: uint64(req.Size), Sha256: req.SHA256[:]}
	if req.Resume != nil {
		m.Resume = req.Resume[:]
	}
	a, err := doAs[*pb.MediaUploadSlot](ctx, c, &request{kind: protocol.KindMediaUpload, body: func(rid uint32) proto.Message {
		m := proto.CloneOf(m)
		m.Rid = rid
		return m
	}})
	if err != nil {
		return MediaUploadSlot{}, err
	}
	if len(a.Id) != protocol.MediaIDLen {
		return MediaUploadSlot{}, fmt.Errorf("%w: media id of %d bytes", ErrProtocol, len(a.Id))
	}
	return MediaUploadSlot{
		ID: MediaID(a.Id), Stored: a.Stored, URL: a.Url,
		TTL: time.Duration(a.ExpiresInS) * time.Second, Offset: int64(a.Offset),
	}, nil
}

// RequestDownloadURL asks the server for a download URL for media id
// (MEDIA_DOWNLOAD → MEDIA_DOWNLOAD_URL, [S-14-7]), retried like
// RequestUploadSlot. MEDIA_NOT_FOUND (unknown or expired) and
// MEDIA_NOT_READY (still being uploaded) are *ServerErrors.
func (c *Client) RequestDownloadURL(ctx context.Context, id MediaID) (MediaDownloadURL, error) {
	a, err := doAs[*pb.MediaDownloadUrl](ctx, c, &request{kind: protocol.KindMediaDownload, body: func(rid uint32) proto.Message {
		return &pb.MediaDownload{Rid: rid, Id: id[:]}
	}})
	if err != nil {
		return MediaDownloadURL{}, err
	}
	if len(a.Sha256) != 32 {
		return MediaDownloadURL{}, fmt.Errorf("%w: media SHA-256 of %d bytes", ErrProtocol, len(a.Sha256))
	}
	return MediaDownloadURL{
		URL: a.Url, TTL: time.Duration(a.ExpiresInS) * time.Second, Size: int64(a.Size),
		SHA256: [32]byte(a.Sha256), Type: a.Type,
	}, nil
}
