#!/usr/bin/env bash
# A first session with nothing but curl, over the Connect protocol with JSON (SPEC §11):
# log in, read the user, follow room 1, send a message and see it arrive.
#   VEZA_HTTP=localhost:8080 examples/curl/session.sh      (against `veza serve --demo`)
set -euo pipefail
API=http://${VEZA_HTTP:-localhost:8080}
JSON=(-H 'content-type: application/json')

# Unary calls: POST the request as JSON, get the response as JSON.
LOGIN=$(curl -sf "$API/veza.auth.AuthService/Authenticate" "${JSON[@]}" \
  -d '{"email":"user@veza.app","password":"password123"}')
echo "login: $LOGIN"
TOKEN=$(sed -E 's/.*"accessToken":"([^"]+)".*/\1/' <<<"$LOGIN")
AUTH=(-H "authorization: Bearer $TOKEN")
echo "me: $(curl -sf "$API/veza.auth.AuthService/GetUserInfo" "${JSON[@]}" "${AUTH[@]}" -d '{}')"

# Server streaming: one enveloped message in (a flags byte, a 4-byte length, the JSON), and
# envelopes out until the stream ends. `envelope` frames messages shorter than 256 bytes.
envelope() { printf '\0\0\0\0'"\\x$(printf %02x ${#1})"'%s' "$1"; }
envelope '{"roomId":"1"}' | curl -sN "$API/veza.chat.ChatService/StreamMessages" \
  -H 'content-type: application/connect+json' "${AUTH[@]}" --data-binary @- --output - \
  --max-time "${VEZA_FOLLOW_SECONDS:-3}" | tr -c '[:print:]' '\n' | sed -nE 's/^.?(\{".*)/received: \1/p' &
sleep 1

echo "sent: $(curl -sf "$API/veza.chat.ChatService/SendMessage" "${JSON[@]}" "${AUTH[@]}" \
  -d '{"roomId":"1","content":"Hello from curl!"}')"

# Errors come back as JSON with the gRPC code's name and an HTTP status.
curl -s -w ' (HTTP %{http_code})\n' "$API/veza.auth.AuthService/Authenticate" "${JSON[@]}" \
  -d '{"email":"user@veza.app","password":"wrong"}'
wait
