package vault

import (
	"encoding/base64"
	"encoding/json"
)

func b64(b []byte) string               { return base64.StdEncoding.EncodeToString(b) }
func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
