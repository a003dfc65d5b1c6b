//! HubServer: HTTP and WebSocket on one port (the reference's `createHubServer`).
