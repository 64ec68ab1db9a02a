"""NetVLAD global descriptor head: model.py (network, weight files), train.py; the retrieval descriptor that runs it
is relocal_ros/retrieval/netvlad.py."""
