package server

import (
	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// MediaService answers the media requests of authenticated connections
// (spec.md section 14) off the event loop; media.Service implements it.
// Both methods must not block: they queue the request and report false,
// answering nothing, when they cannot take it. A queued request is
// answered exactly once through ep.Reply (which ends its in-flight count
// on the connection), from any goroutine.
type MediaService interface {
	// Upload takes a MediaUpload of user; the answer is MediaUploadSlot or
	// Error.
	Upload(user uint64, m *pb.MediaUpload, ep interface{ Reply(frames []byte) }) bool
	// Download takes a MediaDownload of user; the answer is
	// MediaDownloadUrl or Error.
	Download(user uint64, m *pb.MediaDownload, ep interface{ Reply(frames []byte) }) bool
}

// handleMediaUpload hands an upload slot request to the media service
// ([S-14-3]). The service checks the fields; the loop only decodes.
func (c *conn) handleMediaUpload(body []byte, w *buffer) verdict {
	var m pb.MediaUpload
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	svc := c.srv.cfg.Media
	if svc == nil {
		refuse(w, protocol.CodeMediaUnavailable, m.Rid, 0)
		return verdict{}
	}
	c.pending.Add(1)
	if !svc.Upload(c.user, &m, c) {
		c.pending.Add(-1)
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, m.Rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}

// handleMediaDownload hands a download URL request to the media service
// ([S-14-6]).
func (c *conn) handleMediaDownload(body []byte, w *buffer) verdict {
	var m pb.MediaDownload
	if err := codec.ParseProto(body, &m); err != nil {
		return c.fail(w, protocol.CodeMalformedFrame)
	}
	svc := c.srv.cfg.Media
	if svc == nil {
		refuse(w, protocol.CodeMediaUnavailable, m.Rid, 0)
		return verdict{}
	}
	c.pending.Add(1)
	if !svc.Download(c.user, &m, c) {
		c.pending.Add(-1)
		w.b = codec.AppendError(w.b, protocol.CodeOverloaded, m.Rid, 0, "", retryAfterBusyMS)
	}
	return verdict{}
}
