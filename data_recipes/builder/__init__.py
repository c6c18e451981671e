"""The spoken-instruction data builder: text instructions -> speakable answers -> speech -> units -> omni records."""
