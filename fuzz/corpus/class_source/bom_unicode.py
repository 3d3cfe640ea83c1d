class Ünïcode:
    x = 'é'
