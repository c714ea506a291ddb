"""Matrix (matrix-nio, end-to-end encrypted): one platform, split by job."""
