// The seed's client code (docs 002, "Connecting a Client" and "Subscribing to Rooms"),
// copied unchanged but for the URL and the token (from the environment here); the lines
// marked "demo" only print what happens.
import io from "socket.io-client";
const TOKEN = process.env.TOKEN; // demo: "your-jwt-token"

const socket = io(process.env.GATEWAY_URL + "/ws", {
  auth: {
    token: TOKEN,
  },
});

socket.on("connection_established", (event) => {
  console.log("Connected:", event.data.connection_id);
});

// Subscribe to project updates
socket.emit(
  "subscribe",
  {
    room: "project:550e8400-e29b-41d4-a716-446655440000",
  },
  (response) => {
    if (response.status === "success") {
      console.log("Subscribed to project");
    }
  },
);

// Listen for updates
socket.on("project.updated", (event) => {
  console.log("Project was updated:", event.data);
});

socket.on("connect", () => console.log("demo: connect, recovered =", socket.recovered, "transport =", socket.io.engine.transport.name)); // demo
socket.on("disconnect", (reason) => console.log("demo: disconnect:", reason)); // demo
