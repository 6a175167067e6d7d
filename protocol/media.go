package protocol

import "github.com/parley-im/parley/protocol/pb"

// MaxMediaSize returns the largest media of type t in bytes (spec.md
// [S-14-1]), or 0 when t is not a media type (CONTENT_TEXT, or a type this
// version does not know).
func MaxMediaSize(t pb.ContentType) int64 {
	switch t {
	case pb.ContentType_CONTENT_IMAGE:
		return MaxMediaImage
	case pb.ContentType_CONTENT_VIDEO:
		return MaxMediaVideo
	case pb.ContentType_CONTENT_VOICE:
		return MaxMediaVoice
	case pb.ContentType_CONTENT_DOCUMENT:
		return MaxMediaDocument
	}
	return 0
}
