from shotline.cli import main

main()
