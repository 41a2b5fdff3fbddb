"""The same flow as the Node.js example, with grpcio: authenticate, send a message to room 1,
stream the room's messages starting with the one just sent.

Usage: python client.py   (VEZA_ADDR, VEZA_EMAIL, VEZA_PASSWORD, VEZA_ROOM, VEZA_MAX_MESSAGES)
The stubs are generated at run time from proto/veza.proto (grpcio-tools).
"""

import os
import pathlib
import sys

import grpc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
sys.path.insert(0, str(PROTO_ROOT))

auth_pb2, auth_grpc = grpc.protos_and_services("veza/auth.proto")
chat_pb2, chat_grpc = grpc.protos_and_services("veza/chat.proto")

ADDR = os.environ.get("VEZA_ADDR", "localhost:9090")
EMAIL = os.environ.get("VEZA_EMAIL", "user@veza.app")
PASSWORD = os.environ.get("VEZA_PASSWORD", "password123")
ROOM = int(os.environ.get("VEZA_ROOM", "1"))
MAX_MESSAGES = int(os.environ.get("VEZA_MAX_MESSAGES", "0"))


def main() -> None:
    with grpc.insecure_channel(ADDR) as channel:
        auth = auth_grpc.AuthServiceStub(channel)
        chat = chat_grpc.ChatServiceStub(channel)
        token = auth.Authenticate(auth_pb2.AuthenticateRequest(email=EMAIL, password=PASSWORD)).access_token
        print("Authenticated successfully")
        metadata = [("authorization", f"Bearer {token}")]
        sent = chat.SendMessage(
            chat_pb2.SendMessageRequest(room_id=ROOM, content="Hello from Python client!"), metadata=metadata
        ).message
        print(f"Message sent: id {sent.message_id} in room {sent.room_id}")
        stream = chat.StreamMessages(
            chat_pb2.StreamMessagesRequest(room_id=ROOM, last_message_id=sent.message_id - 1), metadata=metadata
        )
        for received, message in enumerate(stream, start=1):
            print(f"Received message: {message.content} (id {message.message_id}, from user {message.user_id})")
            if MAX_MESSAGES and received >= MAX_MESSAGES:
                stream.cancel()
                break


if __name__ == "__main__":
    main()
