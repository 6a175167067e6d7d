package media

import (
	"github.com/parley-im/parley/protocol"
)

// The codes and kinds of spec.md section 14 under short names.
const (
	codeTooLarge       = protocol.CodeMediaTooLarge
	codeNotFound       = protocol.CodeMediaNotFound
	codeNotReady       = protocol.CodeMediaNotReady
	codeURLExpired     = protocol.CodeMediaURLExpired
	codeBadSignature   = protocol.CodeMediaBadSignature
	codeHashMismatch   = protocol.CodeMediaHashMismatch
	codeSizeMismatch   = protocol.CodeMediaSizeMismatch
	codeOffsetMismatch = protocol.CodeMediaOffsetMismatch
	codeUploadBusy     = protocol.CodeMediaUploadBusy
	codeStorageFull    = protocol.CodeMediaStorageFull
	codeQuotaExceeded  = protocol.CodeMediaQuotaExceeded
	codeTooMany        = protocol.CodeMediaTooManyTransfers

	codeInvalidArgument = protocol.CodeInvalidArgument
	codeRateLimited     = protocol.CodeRateLimited
	codeOverloaded      = protocol.CodeOverloaded
	codeInternal        = protocol.CodeInternal

	kindUploadSlot  = protocol.KindMediaUploadSlot
	kindDownloadURL = protocol.KindMediaDownloadURL
)

// maxSize returns the largest media of type t in bytes, 0 for a type that
// is not media.
var maxSize = protocol.MaxMediaSize
