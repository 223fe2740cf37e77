"""Files: scenes read window by window, masks written atomically, and the resume record in each mask."""
