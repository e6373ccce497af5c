"""mlet-compress: multi-layer embedding training and embedding-table compression."""
